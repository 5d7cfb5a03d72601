"""What every command shares: flags built from config dataclasses, loading a model with its task, --json.

`add_config_flags(parser, cls)` adds one --flag per field of a config (nested configs included): the
type comes from the field's annotation, the help from `metadata["help"]`, the valid names from
`metadata["choices"]` (read lazily, when help is shown or a value is checked), and the default from
the instance the command passes, so `--help` shows what the run will use. `config_from_args` builds
the config back from the parsed flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterable


class LazyChoices:
    """A choices container that asks its registry only when argparse checks a value or shows help."""

    def __init__(self, names: Callable[[], Iterable[str]]):
        self._names = names

    def __iter__(self):
        return iter(list(self._names()))

    def __contains__(self, value: object) -> bool:
        return value in list(self._names())


def _scalar(tp) -> tuple[type | None, bool, bool]:
    """(scalar type, optional, is a tuple of them) of an annotation."""
    optional = False
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional, tp = True, args[0]
    if tp is tuple or typing.get_origin(tp) is tuple:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return (args[0] if args else str), optional, True
    return tp, optional, False


def _flag(prefix: str, name: str) -> str:
    return "--" + (prefix + name).replace("_", "-")


def add_config_flags(p: argparse.ArgumentParser, cls: type, defaults: Any = None, skip: Iterable[str] = (),
                     prefix: str = "") -> None:
    """One --flag per field of config `cls` (recursing into nested configs; a field named `loop` adds
    its flags unprefixed, any other nested config adds `--<field>-<name>`). `defaults` is the instance
    whose values are the flags' defaults (default: `cls()`); `skip` names fields to leave out."""
    defaults = cls() if defaults is None else defaults
    skip = set(skip)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("cli", True):
            continue
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            sub = prefix if f.name == "loop" else f"{prefix}{f.name}_"
            target = p
            if isinstance(p, argparse.ArgumentParser):  # one titled group per nested config in --help
                title = f.metadata.get("help", f.name)
                target = p.add_argument_group(title if f.name == "loop" else f"{_flag(sub, '*')}: {title}")
            add_config_flags(target, type(value), value, skip, sub)
            continue
        kind, optional, many = _scalar(hints[f.name])
        help_text = f.metadata.get("help", f.name)
        kwargs: dict[str, Any] = {"dest": _dest(prefix, f.name), "default": value}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if many:
                kwargs["nargs"] = "*"
        if "choices" in f.metadata:
            kwargs["choices"] = LazyChoices(f.metadata["choices"])
            kwargs["metavar"] = "NAME"
            help_text += "; one of: %(choices)s"
        help_text = help_text.replace("%", "%%").replace("%%(choices)s", "%(choices)s")
        if (value is None or (many and not value)) and "default" in help_text:  # it says what unset means
            kwargs["help"] = help_text
        else:
            shown = "unset" if value is None else (" ".join(map(str, value)) or "none") if many else value
            kwargs["help"] = f"{help_text} (default: {shown})"
        p.add_argument(_flag(prefix, f.name), **kwargs)


def _dest(prefix: str, name: str) -> str:
    return f"{prefix}{name}"


def config_from_args(cls: type, args: argparse.Namespace, defaults: Any = None, prefix: str = ""):
    """The config `add_config_flags` described, with the values parsed from the command line."""
    defaults = cls() if defaults is None else defaults
    given = vars(args)
    changes = {}
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            sub = prefix if f.name == "loop" else f"{prefix}{f.name}_"
            changes[f.name] = config_from_args(type(value), args, value, sub)
        elif _dest(prefix, f.name) in given:
            v = given[_dest(prefix, f.name)]
            changes[f.name] = tuple(v) if isinstance(v, list) else v
    return dataclasses.replace(defaults, **changes)


def load_with_task(args) -> tuple:
    """(model, meta, task name) for commands that take MODEL_DIR and --task (default: the model's own)."""
    from ..io.artifacts import load

    model, meta = load(args.model_dir)
    name = args.task or meta.get("task")
    if not name:
        raise ValueError("the model records no task; pass --task")
    return model, meta, name


def write_json(path: str | None, data: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2, sort_keys=True))
        print(f"wrote {path}")
