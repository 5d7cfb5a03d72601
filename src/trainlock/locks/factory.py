"""Build locks from specs: a dict, a list (composite "all"), or a JSON / YAML file.

A spec is `{"type": NAME, **config}` (config keys are the lock's config fields), or
`{"type": "composite", "mode": "all" | "any", "locks": [spec, ...]}`; a list of specs means a
composite with mode "all". An unknown type raises the registry's `UnknownNameError` (it lists
the valid names); an unknown config key raises ValueError listing the valid keys.

`lock_from_meta(meta)` rebuilds the lock recorded in a model directory's metadata,
`meta["locks"] = [{"type": NAME, "config": {...}, "record": {...}, "plugin": SOURCE?}, ...]`, as a
`RecordedLock` that certifies from the weights alone. Entries written before records existed (the measured
values inside "config") are migrated on read: the keys that are fields of the lock's record move there.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..registry import UnknownNameError
from .base import LOCKS, Lock, RecordedLock


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
    text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not part of the spec
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(
                f"{path}: reading YAML needs PyYAML, which is not installed; write the spec as JSON instead"
            ) from None
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


def split_legacy(cls: type, config: dict) -> tuple[dict, dict]:
    """(config, record) from a config written before records existed: keys that are fields of the lock's
    record and not of its config move to the record (a lock may define its own `split_legacy` classmethod)."""
    own = getattr(cls, "split_legacy", None)
    if own is not None:
        return own(config)
    cfg_names = {f.name for f in dataclasses.fields(cls.config_cls)}
    rec_names = {f.name for f in dataclasses.fields(cls.record_cls)}
    moved = {k: v for k, v in config.items() if k in rec_names and k not in cfg_names}
    return {k: v for k, v in config.items() if k not in moved}, moved


def recorded_lock(entry: dict) -> RecordedLock:
    """One `meta["locks"]` entry as a RecordedLock. A lock from a plugin that is not loaded raises
    UnknownNameError naming the plugin."""
    if not isinstance(entry, dict) or "type" not in entry:
        raise ValueError(f"recorded lock {entry!r} is not {{'type': ..., 'config': {{...}}, 'record': {{...}}}}")
    name = entry["type"]
    if name not in LOCKS and entry.get("plugin"):
        raise UnknownNameError(
            f"lock {name!r} is defined by the plugin {entry['plugin']!r}, which is not loaded: "
            f"pass --plugin {entry['plugin']} (or set TRAINLOCK_PLUGINS)"
        )
    cls = LOCKS.get(name)
    config = dict(entry.get("config") or {})
    record = entry.get("record")
    if record is None:
        config, record = split_legacy(cls, config)
    lock = cls.from_config(config)
    return RecordedLock(lock, lock.record_from_dict(record))


def lock_from_meta(meta: dict | list) -> RecordedLock:
    """The lock recorded as `meta["locks"]` (a list of entries): the lock itself when there is one entry, a
    composite "all" of them when there are several."""
    entries = meta.get("locks") if isinstance(meta, dict) else meta
    if not entries or not isinstance(entries, (list, tuple)):
        raise ValueError("no locks recorded: expected meta['locks'] = [{'type': ..., 'config': {...}}, ...]")
    if len(entries) == 1:
        return recorded_lock(entries[0])
    from .composite import composite_of

    return composite_of([recorded_lock(e) for e in entries])


__all__ = ["lock_factory", "lock_from_meta", "lock_from_spec", "read_spec", "recorded_lock", "split_legacy"]
