"""SHA-256 of tensors and of whole state dicts, so that any change to any weight is detectable.

A tensor's hash covers its dtype, its shape and the raw bytes of its CPU contiguous copy, so a
change of one element by one ulp, a sign flip (including 0.0 -> -0.0), a cast to another dtype
with the same bytes, or a reshape all give a different hash. Several tensors hash as one sequence:
each one's dtype and shape, then its bytes, in order. The state hash is the SHA-256 over the
sorted (name, tensor hash) pairs, so it changes when any tensor changes, or when a tensor is
added, removed or renamed.

This is the package's one tensor hash: the state hash, the frozen lock's per-tensor records and
the red team's data identity all use `tensor_sha256`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
import torch.nn as nn

__all__ = ["file_sha256", "state_hashes", "state_sha256", "tensor_sha256"]


def _raw_bytes(t: torch.Tensor) -> bytes:
    flat = t.detach().cpu().contiguous().reshape(-1)
    if flat.dtype != torch.uint8:
        flat = flat.view(torch.uint8)  # reinterpret, no conversion: every bit counts
    return flat.numpy().tobytes()


def tensor_sha256(*tensors: torch.Tensor, legacy: bool = False) -> str:
    """Hex SHA-256 over the dtype, the shape and the raw bytes of each tensor (CPU contiguous), in order.

    One tensor gives the hash recorded in `state_hashes` (and in every saved trainlock.json). `legacy=True`
    gives the header trainlock <= 0.2.0 wrote for the frozen lock's records and the red team's identity.json
    ("torch.float32|(3, 2)|", no "trainlock-tensor-v1" prefix), so that those records can still be checked.
    """
    if not tensors:
        raise TypeError("tensor_sha256 needs at least one tensor")
    h = hashlib.sha256()
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(t).__name__}")
        if legacy:
            h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        else:
            h.update(f"trainlock-tensor-v1|{str(t.dtype).removeprefix('torch.')}|{list(t.shape)}|".encode())
        h.update(_raw_bytes(t))
    return h.hexdigest()


def state_sha256(tensor_hashes: Mapping[str, str]) -> str:
    """Hex SHA-256 over the sorted (name, tensor hash) pairs."""
    h = hashlib.sha256(b"trainlock-state-v1\n")
    for name in sorted(tensor_hashes):
        h.update(f"{name}\t{tensor_hashes[name]}\n".encode())
    return h.hexdigest()


def state_hashes(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> dict:
    """{"tensors": {name: hex}, "state": hex} for a module (its state_dict) or a state dict."""
    if isinstance(model_or_state_dict, nn.Module):
        state = model_or_state_dict.state_dict()
    elif isinstance(model_or_state_dict, Mapping):
        state = model_or_state_dict
    else:
        raise TypeError(f"expected an nn.Module or a state dict, got {type(model_or_state_dict).__name__}")
    tensors = {str(k): tensor_sha256(v) for k, v in state.items()}
    return {"tensors": tensors, "state": state_sha256(tensors)}


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
