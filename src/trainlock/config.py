"""Configs are dataclasses that round-trip through JSON; unknown keys fail with the valid ones.

A config may nest another (`FineTuneConfig(loop=LoopConfig(...), ...)`): `to_dict` writes the nested
dict and `from_dict` rebuilds it; keys a nested dict leaves out take the parent's default for that
nested config (SpecDef's loop starts from Adadelta, not from LoopConfig's Adam). Flat dicts written
before configs were nested (version 0.1: the loop's fields beside the others) still load: a key that
is not a field of the config but is a field of exactly one nested config goes to that one.

Each field carries its help text in `metadata["help"]` (use `option`); the CLI builds its flags and
`--help` from it, with the valid names listed where `metadata["choices"]` names a registry.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

C = TypeVar("C")
_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    choices: Callable[[], Iterable[str]] | None = None,
    cli: bool = True,
    flat: bool = False,
    private: bool = False,
    omit_default: bool = False,
) -> Any:
    """A dataclass field with its help text (and, optionally, a callable giving its valid names).

    `factory` makes a mutable default (a nested config, a dict); `cli=False` keeps the field off the
    command line (it is still saved and loaded); `flat=True` gives a nested config's fields unprefixed
    flags (--workers, not --runner-workers), as the `loop` field's; `private=True` keeps the field out of a
    public release (`trainlock release` drops it from the lock's recorded config); `omit_default=True` leaves the
    field out of `to_dict` while it holds its default (a field added later: records, run keys and bindings written
    before it stay the same)."""
    meta = {"help": help, "cli": cli, "flat": flat, "private": private, "omit_default": omit_default}
    if choices is not None:
        meta["choices"] = choices
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def nested_types(cls: type) -> dict[str, type]:
    """{field name: dataclass type} for the fields of `cls` that are themselves configs."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if isinstance(hints.get(f.name), type) and dataclasses.is_dataclass(hints[f.name])
    }


def to_dict(cfg: Any) -> dict:
    """The config as a plain dict, nested configs as nested dicts (tuples become lists, so it survives
    JSON unchanged). Fields marked `omit_default` are left out while they hold their default."""
    d = json.loads(json.dumps(dataclasses.asdict(cfg)))
    _drop_defaults(cfg, d)
    return d


def _drop_defaults(cfg: Any, d: dict) -> None:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get("omit_default") and f.default is not dataclasses.MISSING and value == f.default:
            d.pop(f.name, None)
        elif dataclasses.is_dataclass(value) and isinstance(d.get(f.name), dict):
            _drop_defaults(value, d[f.name])


def _route_flat(cls: type, data: dict, nested: dict[str, type]) -> dict:
    """Move keys of a version-0.1 flat dict into the nested config that owns them."""
    names = {f.name for f in dataclasses.fields(cls)}
    out = {k: v for k, v in data.items() if k in names}
    for key, value in data.items():
        if key in names:
            continue
        owners = [n for n, t in nested.items() if key in {f.name for f in dataclasses.fields(t)}]
        if len(owners) != 1:
            out[key] = value  # unknown (or ambiguous): from_dict names it
            continue
        sub = out.setdefault(owners[0], {})
        if isinstance(sub, dict):
            sub = out[owners[0]] = dict(sub)
            sub.setdefault(key, value)
    return out


def _default_dict(f: dataclasses.Field) -> dict:
    """A nested field's default as a dict (the parent's default, e.g. SpecDef's Adadelta loop)."""
    if f.default_factory is not _MISSING:
        return to_dict(f.default_factory())
    return {} if f.default is _MISSING or f.default is None else to_dict(f.default)


def from_dict(cls: type[C], data: dict) -> C:
    """Build `cls` from a dict (nested or version-0.1 flat), rejecting unknown keys with the valid ones."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a dict of fields, got {type(data).__name__}: {data!r}")
    nested = nested_types(cls)
    data = _route_flat(cls, data, nested) if nested else data
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; valid: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        v = data[f.name]
        if f.name in nested and isinstance(v, dict):
            v = from_dict(nested[f.name], {**_default_dict(f), **v})  # unset keys: this config's default
        elif isinstance(v, list):
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)


def check_int(owner: str, name: str, value: Any, low: int | None = None, allow_none: bool = False) -> None:
    """ValueError unless `value` is an integer (not a bool) >= `low` (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        need = "an integer" + (f" >= {low}" if low is not None else "") + (" (or unset)" if allow_none else "")
        raise ValueError(f"{owner}: {name} must be {need}, got {value!r}")


def check_float(
    owner: str,
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    allow_none: bool = False,
    open_low: bool = False,
) -> None:
    """ValueError unless `value` is a finite number in [low, high] ((low, high] with `open_low`)."""
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low is None or (value > low if open_low else value >= low)) and (high is None or value <= high)
    if not ok:
        lo = "" if low is None else (f"> {low:g}" if open_low else f">= {low:g}")
        hi = "" if high is None else f"<= {high:g}"
        need = "a finite number" + (f" {lo}" if lo else "") + (" and " if lo and hi else " " if hi else "") + hi
        raise ValueError(f"{owner}: {name} must be {need.strip()}{' (or unset)' if allow_none else ''}, got {value!r}")


def check_regex(owner: str, name: str, value: Any, allow_none: bool = True) -> None:
    """ValueError unless `value` is a string that compiles as a regular expression (or None when allowed)."""
    import re

    if value is None and allow_none:
        return
    if not isinstance(value, str):
        raise ValueError(f"{owner}: {name} must be a regular expression (a string), got {value!r}")
    try:
        re.compile(value)
    except re.error as e:
        raise ValueError(f"{owner}: {name} is not a valid regular expression ({value!r}: {e})") from None


def to_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), sort_keys=True, indent=2)


def help_of(cls: type, name: str) -> str:
    """The help text of field `name` of config `cls` ('' when it has none)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(f"{cls.__name__} has no field {name!r}")
