"""Built-in small models and offline Hugging Face classifiers (registered by name), and helpers for any
nn.Module. `build("hf:DIR", num_classes=...)` takes a local save_pretrained directory."""

from .base import MODELS, build, find_head, pooled_features, replace_head
from .cnn import CNN  # importing each module registers its model
from .effnet import EffNetLite  # effnet-lite0/1/2 (the ImageNet weights are read only when one is built)
from .hf import HFClassifier  # minilm-l6, smollm2-135m (transformers is imported only when one is built)
from .mlp import MLP
from .resnet import ResNet18
from .transformer import Transformer

__all__ = [
    "CNN",
    "MLP",
    "MODELS",
    "EffNetLite",
    "HFClassifier",
    "ResNet18",
    "Transformer",
    "build",
    "find_head",
    "pooled_features",
    "replace_head",
]
