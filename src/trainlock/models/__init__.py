"""Built-in small models and offline Hugging Face classifiers (registered by name), and helpers for any
nn.Module. `build("hf:DIR", num_classes=...)` takes a local save_pretrained directory."""

from .base import MODELS, build, find_head, replace_head
from .cnn import CNN  # importing each module registers its model
from .hf import HFClassifier  # minilm-l6, smollm2-135m (transformers is imported only when one is built)
from .mlp import MLP
from .resnet import ResNet18
from .transformer import Transformer

__all__ = ["CNN", "MLP", "MODELS", "HFClassifier", "ResNet18", "Transformer", "build", "find_head", "replace_head"]
