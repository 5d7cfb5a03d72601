"""Build locks from specs: a dict, a list (composite "all"), or a JSON / YAML file.

A spec is `{"type": NAME, **config}` (config keys are the lock's config fields), or
`{"type": "composite", "mode": "all" | "any", "locks": [spec, ...]}`; a list of specs means a
composite with mode "all". An unknown type raises the registry's `UnknownNameError` (it lists
the valid names); an unknown config key raises ValueError listing the valid keys.

`lock_from_meta(meta)` rebuilds the lock recorded in a model directory's metadata:
`meta["locks"] = [{"type": NAME, "config": {...}}, ...]` (what `trainlock lock --spec` writes).
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import LOCKS, Lock


def lock_from_spec(spec: dict) -> Lock:
    """One lock from `{"type": NAME, **config}`."""
    if not isinstance(spec, dict):
        raise ValueError(f"a lock spec is a dict {{'type': NAME, ...config}}, got {type(spec).__name__}: {spec!r}")
    if "type" not in spec:
        raise ValueError(f"lock spec {spec!r} has no 'type'; valid types: {', '.join(LOCKS.names())}")
    cls = LOCKS.get(spec["type"])
    return cls.from_config({k: v for k, v in spec.items() if k != "type"})


def read_spec(path: str | Path):
    """The parsed spec file: YAML for .yaml / .yml (needs PyYAML), JSON otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"lock spec file {str(path)!r} does not exist")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: reading YAML needs PyYAML, which is not installed; write the spec as "
                             f"JSON instead") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); YAML specs need a .yaml or .yml name") from None


def lock_factory(spec: dict | list | str | Path) -> Lock:
    """A lock from a spec dict, a list of specs (composite "all"), a JSON / YAML spec file, or an
    inline JSON string (one starting with '{' or '[')."""
    if isinstance(spec, str) and spec.lstrip()[:1] in ("{", "["):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as e:
            raise ValueError(f"inline lock spec is not valid JSON ({e})") from None
    elif isinstance(spec, (str, Path)):
        spec = read_spec(spec)
    if isinstance(spec, (list, tuple)):
        spec = {"type": "composite", "mode": "all", "locks": list(spec)}
    return lock_from_spec(spec)


def lock_from_meta(meta: dict | list) -> Lock:
    """The lock recorded as `meta["locks"]` (a list of {"type", "config"}): the lock itself when there
    is one entry, a composite "all" of them when there are several."""
    entries = meta.get("locks") if isinstance(meta, dict) else meta
    if not entries or not isinstance(entries, (list, tuple)):
        raise ValueError("no locks recorded: expected meta['locks'] = [{'type': ..., 'config': {...}}, ...]")
    specs = []
    for e in entries:
        if not isinstance(e, dict) or "type" not in e:
            raise ValueError(f"recorded lock {e!r} is not {{'type': ..., 'config': {{...}}}}")
        specs.append({"type": e["type"], **dict(e.get("config") or {})})
    return lock_from_spec(specs[0]) if len(specs) == 1 else lock_factory(specs)


__all__ = ["lock_factory", "lock_from_meta", "lock_from_spec", "read_spec"]
