"""Model directories: `model.safetensors` (weights, never pickle) + `trainlock.json` (metadata).

The JSON records the architecture (registry name and kwargs) so `load` can rebuild the model,
the task, metrics, the lock config and sigma statistics when locked, the package version, and
the SHA-256 of the weights file so that a changed or corrupt file is caught with a clear error.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ._version import __version__
from .models import MODELS, build

WEIGHTS = "model.safetensors"
META = "trainlock.json"
FORMAT = 1


class ArtifactError(RuntimeError):
    """A model directory is missing, incomplete, corrupt, or does not match its model."""


def model_name(model: nn.Module) -> str | None:
    """The registry name of a built-in model's class, or None for any other module."""
    for name in MODELS.names():
        if MODELS.get(name) is type(model):
            return name
    return None


def architecture(model: nn.Module) -> dict | None:
    """{"name", "kwargs"} for a built-in model (enough to rebuild it), else None."""
    name = model_name(model)
    cfg = getattr(model, "config", None)
    return {"name": name, "kwargs": dict(cfg)} if name and isinstance(cfg, dict) else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(model: nn.Module, path: str | Path, meta: dict | None = None) -> Path:
    """Write `model` and `meta` to directory `path` (created). Returns the directory."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # clone: tensors that share storage (tied weights) cannot be written as views
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, str(path / WEIGHTS), metadata={"trainlock_version": __version__, "format": str(FORMAT)})
    meta = dict(meta or {})
    if "lock" not in meta and getattr(model, "trainlock_lock", None):
        meta["lock"] = model.trainlock_lock
    meta.update(
        trainlock_version=__version__,
        format=FORMAT,
        architecture=architecture(model) or meta.get("architecture"),
        weights_sha256=_sha256(path / WEIGHTS),
    )
    (path / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=_json_default))
    return path


def _json_default(obj):
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to trainlock.json")


def read_meta(path: str | Path) -> dict:
    """The parsed `trainlock.json` of a model directory."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a model directory (expected {WEIGHTS} and {META} inside)")
    meta_file = path / META
    if not meta_file.is_file():
        raise ArtifactError(f"{path}: missing {META}")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{meta_file}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{meta_file}: expected a JSON object")
    return meta


def load(path: str | Path, model: nn.Module | None = None) -> tuple[nn.Module, dict]:
    """Load a model directory. Built-in architectures are rebuilt; pass `model` for any other."""
    path = Path(path)
    meta = read_meta(path)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise ArtifactError(f"{path}: missing {WEIGHTS}")
    expected = meta.get("weights_sha256")
    if expected and _sha256(weights) != expected:
        raise ArtifactError(
            f"{weights}: SHA-256 differs from the one recorded in {META}; the file is corrupt, "
            f"truncated, or was changed after saving"
        )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{weights}: unreadable safetensors file ({e})") from None
    if model is None:
        arch = meta.get("architecture")
        if not arch:
            raise ArtifactError(f"{path}: holds a custom model; pass the module: load(path, model=...)")
        model = build(arch["name"], **arch["kwargs"])
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"{weights}: weights do not fit the model: {e}") from None
    if meta.get("lock"):
        model.trainlock_lock = meta["lock"]
    return model, meta
