"""Training precision: fp32, or bf16 autocast around the forward pass and the loss.

`--precision auto` picks bf16 when both hold:

- the device computes bf16 natively: a CUDA GPU with `torch.cuda.is_bf16_supported()`, or a CPU with
  avx512_bf16 or AMX tiles (`torch.cpu._is_avx512_bf16_supported()` / `_is_amx_tile_supported()`);
  bf16 on other CPUs is emulated and slower than fp32;
- the model is a transformer (an attention block: `nn.MultiheadAttention` or any module whose class name
  contains "Attention"), or a CNN (a convolution: torch's Conv1d/2d/3d or a module whose class name contains
  "Conv", such as GPT-2's Conv1D) on a device whose bf16 convolutions are fast: a CUDA GPU, or a CPU with AMX
  tiles. On a CPU with avx512_bf16 but no AMX (the one this was measured on), bf16 autocast made MiniLM-L6's
  step 1.59x faster and slowed the convolutional ones: EfficientNet-Lite0 0.69x, the small CNN 0.85x
  (`benchmarks/bench_precision.py`, notes/speed.md), so such CNNs stay fp32. Plain MLPs stay fp32: their
  matrices are small, and the casts autocast adds cost about as much as bf16 saves.

Otherwise fp32. Only the forward pass and the loss run under autocast; weights, gradients and optimizer
state stay fp32, evaluation runs in fp32, and singular values (the SpecDef spectral term, linalg.spectral)
are computed in fp32 with autocast switched off.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"loop: precision must be one of {PRECISIONS}, got {precision!r}")


def bf16_supported(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively (not by emulation)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    return False


def fast_bf16_convolutions(device: torch.device) -> bool:
    """Whether bf16 convolutions beat fp32 ones on `device`: a CUDA GPU with bf16, or a CPU with AMX tiles."""
    if device.type == "cuda":
        return bf16_supported(device)
    return device.type == "cpu" and bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def model_kind(model: nn.Module) -> str | None:
    """'transformer' (an attention block), 'cnn' (a convolution, no attention) or None."""
    kind = None
    for m in model.modules():
        name = type(m).__name__
        if isinstance(m, nn.MultiheadAttention) or "Attention" in name:
            return "transformer"
        if isinstance(m, nn.modules.conv._ConvNd) or "Conv" in name:
            kind = "cnn"
    return kind


def benefits_from_bf16(model: nn.Module, device: torch.device) -> bool:
    """A transformer, or a CNN on a device with fast bf16 convolutions (see the module's docstring)."""
    kind = model_kind(model)
    return kind == "transformer" or (kind == "cnn" and fast_bf16_convolutions(device))


def resolve_precision(precision: str, model: nn.Module, device: torch.device) -> str:
    """'fp32' or 'bf16': `precision` itself, or what 'auto' picks for this model on this device."""
    check_precision(precision)
    if precision != "auto":
        return precision
    return "bf16" if bf16_supported(device) and benefits_from_bf16(model, device) else "fp32"


def autocast(precision: str, device: torch.device):
    """A context for the forward pass and the loss: bf16 autocast for 'bf16', nothing for 'fp32'."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fp32(device_type: str = "cpu"):
    """A context that switches autocast off (for computations that must stay fp32 inside an autocast region)."""
    return torch.autocast(device_type=device_type, enabled=False)
