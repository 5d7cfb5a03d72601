"""What a model owner publishes: `release(model_dir, out)` writes the public copy of a locked model.

The owner's directory holds a private record: the pre-lock spectrum and the lock's history (what
SpecDef's sigma_before and per-epoch logs are; the sv-clip attack's insider variant reads exactly
that), the retain task's training curve and configuration, the base model's path, per-layer feature
drift. The public copy keeps what a third party needs to load the model and re-check its claims:
the same weights, the architecture (and, for transformers, config.json and the tokenizer), the
certificates and the lock entries they are re-computed from (configurations and the post-lock values
they compare against), the retained-accuracy summary (a claim: checking it needs the original model),
the task and metrics. It is bound and hashed like any model directory, and marked
`"release": {"public": true, ...}` so `verify` says which copy it holds.
"""

from __future__ import annotations

from pathlib import Path

from .artifacts import load, read_meta, record_hashes, save

PRIVATE = ("lock", "base", "train", "attack")  # top-level fields dropped: lock history and spectra, paths, curves
PRIVATE_CONSERVATION = ("feature_drift", "progress")  # per-layer drift points at the lock; progress is the loss curve


def public_meta(meta: dict) -> dict:
    """The metadata of the public copy (see the module docstring); `meta` is not modified."""
    out = {k: v for k, v in meta.items() if k not in PRIVATE and k not in ("weights_sha256", "hashes")}
    if isinstance(out.get("locks"), list):  # config fields a lock marks private (option(..., private=True))
        out["locks"] = [_public_entry(e) for e in out["locks"]]
    cons = out.get("conservation")
    if isinstance(cons, dict):
        out["conservation"] = {k: v for k, v in cons.items() if k not in PRIVATE_CONSERVATION}
    dropped = sorted(k for k in meta if k in PRIVATE)
    if isinstance(cons, dict):
        dropped += [f"conservation.{k}" for k in PRIVATE_CONSERVATION if k in cons]
    out["release"] = {"public": True, "dropped": dropped, "from_record_sha256": record_hashes(meta)["record"]}
    return out


def _public_entry(entry):
    """A lock entry without the config fields it lists as private: a field's name, or a dotted path into the
    config (`locks.1.seed`: a field of a composite's second child)."""
    if not isinstance(entry, dict) or not entry.get("private"):
        return entry
    hidden = sorted(set(entry["private"]))
    config = entry.get("config") or {}
    for path in hidden:
        config = _without(config, str(path).split("."))
    return {**{k: v for k, v in entry.items() if k != "private"}, "config": config, "private_dropped": hidden}


def _without(obj, path: list[str]):
    """A copy of `obj` (nested dicts and lists) without the dict key at `path`; unchanged when nothing is there."""
    if not path:
        return obj
    key, rest = path[0], path[1:]
    if isinstance(obj, dict) and key in obj:
        if not rest:
            return {k: v for k, v in obj.items() if k != key}
        return {**obj, key: _without(obj[key], rest)}
    if isinstance(obj, list) and rest and key.isdigit() and int(key) < len(obj):
        i = int(key)
        return [*obj[:i], _without(obj[i], rest), *obj[i + 1 :]]
    return obj


def release(model_dir: str | Path, out: str | Path) -> tuple[Path, dict]:
    """Write the public copy of `model_dir` to `out` (complete or not at all). Returns (out, its metadata)."""
    meta = read_meta(model_dir)
    if (meta.get("release") or {}).get("public"):
        raise ValueError(f"{model_dir} is already a public release")
    model, _ = load(model_dir)
    pub = public_meta(meta)
    path = save(model, out, pub)
    return path, read_meta(path)
