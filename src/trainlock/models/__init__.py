"""Built-in small models (registered by name) and helpers for any nn.Module."""

from .base import MODELS, build, find_head, replace_head
from .cnn import CNN  # importing each module registers its model
from .mlp import MLP
from .resnet import ResNet18
from .transformer import Transformer

__all__ = ["MODELS", "build", "find_head", "replace_head", "MLP", "CNN", "ResNet18", "Transformer"]
