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
    # what the run is (its flags, the hash of its input weights): written into the checkpoint, and a resume
    # whose identity differs is refused (`check_identity`) before any work
    identity: dict | None = None

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


def save_state(path: str | Path, state: dict, identity: dict | None = None) -> Path:
    """Write nested `state` (dicts, lists, tuples, tensors, numbers, strings) to `path` atomically, with the
    run's `identity` (JSON) in the header."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _pack(state, tensors)
    meta = {"format": FORMAT, "state": json.dumps(skeleton, allow_nan=True)}
    if identity is not None:
        meta["identity"] = json.dumps(identity, sort_keys=True, default=str)
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


def read_identity(path: str | Path) -> dict | None:
    """The identity a checkpoint was written with (None: written without one)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({e})") from None
    try:
        return json.loads(meta["identity"]) if "identity" in meta else None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: damaged checkpoint identity ({e})") from None


def check_identity(ck: Checkpoint) -> None:
    """Before any work: refuse to resume from a checkpoint of another run (other flags, another input model),
    naming what differs."""
    if ck.identity is None or not ck.resume or not ck.path.is_file():
        return
    stored = read_identity(ck.path)
    hint = f"delete {ck.path} or drop --resume to start afresh"
    if stored is None:
        raise CheckpointError(f"{ck.path} was written without its run's identity (an older trainlock); {hint}")
    now = json.loads(json.dumps(ck.identity, sort_keys=True, default=str))
    diffs = []
    for key in sorted(set(stored) | set(now)):
        a, b = stored.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [(f"{sub}", a.get(sub), b.get(sub)) for sub in sorted(set(a) | set(b)) if a.get(sub) != b.get(sub)]
        elif a != b:
            diffs.append((key, a, b))
    if diffs:
        what = "; ".join(f"{name}: {_show(old)} in the checkpoint, {_show(new)} now" for name, old, new in diffs[:3])
        raise CheckpointError(
            f"--resume: {ck.path} was written by a run with another loop configuration or input ({what}); {hint}"
        )


def _show(value) -> str:
    text = "unset" if value is None else json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
