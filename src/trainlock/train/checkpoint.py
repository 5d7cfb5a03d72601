"""Resumable runs: the training loop's whole state in one safetensors file (never pickle), written atomically.

A checkpoint holds the model, the optimizer and the LR schedule, the step and the position in the
epoch's data order, torch's random state, the loop's records (losses, epoch logs, the last good
snapshot of the non-finite guard) and any state the caller adds (a lock's power-iteration warm starts,
an attack's accuracy checks). Nested Python state is stored as JSON in the file's header, its tensors
as tensors, so `fit` resumed from a checkpoint reaches the same final weights as a run never stopped
(bit for bit on CPU).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..atomic import writing_file

FORMAT = "trainlock-checkpoint-1"


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class Checkpoint:
    """Where and how often `fit` writes its state, and whether it starts from what is there."""

    path: Path
    every: int = 200  # optimizer steps between writes
    resume: bool = False  # continue from `path` when it exists (else start afresh and overwrite it)
    state: Stateful | None = None  # more state to carry (e.g. SpecDef's power-iteration warm starts)

    def __post_init__(self):
        self.path = Path(self.path)
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"checkpoint: every must be an integer >= 1, got {self.every!r}")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that belongs to another run."""


def _pack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-ready skeleton of `obj`; its tensors go to `tensors` under generated names."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": {k: _pack(v, tensors) for k, v in obj.items()}}
        return {"__items__": [[_pack(k, tensors), _pack(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_pack(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_pack(v, tensors) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint: cannot store a {type(obj).__name__}")


def _unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]].clone()
        if "__dict__" in obj:
            return {k: _unpack(v, tensors) for k, v in obj["__dict__"].items()}
        if "__items__" in obj:
            return {_unpack(k, tensors): _unpack(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(_unpack(v, tensors) for v in obj["__tuple__"])
    return obj


def save_state(path: str | Path, state: dict) -> Path:
    """Write nested `state` (dicts, lists, tuples, tensors, numbers, strings) to `path` atomically."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _pack(state, tensors)
    meta = {"format": FORMAT, "state": json.dumps(skeleton, allow_nan=True)}
    with writing_file(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def load_state(path: str | Path) -> dict:
    """The state `save_state` wrote; CheckpointError for anything else."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open is not iterable)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a trainlock checkpoint (format {meta.get('format')!r})")
    try:
        return _unpack(json.loads(meta["state"]), tensors)
    except (KeyError, json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{path}: damaged checkpoint ({e})") from None


def rng_state() -> dict:
    out = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
