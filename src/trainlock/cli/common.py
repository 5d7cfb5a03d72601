"""What every command shares: flags built from config dataclasses, loading a model with its task, --json.

`add_config_flags(parser, cls)` adds one --flag per field of a config (nested configs included): the
type comes from the field's annotation, the help from `metadata["help"]`, the valid names from
`metadata["choices"]` (read lazily, when help is shown or a value is checked), and the default from
the instance the command passes, so `--help` shows what the run will use. `config_from_args` builds
the config back from the parsed flags.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


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


def add_config_flags(
    p: argparse.ArgumentParser, cls: type, defaults: Any = None, skip: Iterable[str] = (), prefix: str = ""
) -> None:
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
            flat = f.name == "loop" or f.metadata.get("flat", False)
            sub = prefix if flat else f"{prefix}{f.name}_"
            target = p
            if isinstance(p, argparse.ArgumentParser):  # one titled group per nested config in --help
                title = f.metadata.get("help", f.name)
                target = p.add_argument_group(title if flat else f"{_flag(sub, '*')}: {title}")
            add_config_flags(target, type(value), value, skip, sub)
            continue
        kind, _optional, many = _scalar(hints[f.name])
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
            sub = prefix if f.name == "loop" or f.metadata.get("flat", False) else f"{prefix}{f.name}_"
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
    from ..train import distributed

    if path and distributed.is_main():  # under torchrun, rank 0 writes
        from ..atomic import write_text

        write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))
        print(f"wrote {path}")


def check_output_dir(
    out: str | Path, inputs: Iterable[str | Path] = (), overwrite: bool = False, flag: str = "--out"
) -> Path:
    """Refuse, before any work, an output directory that is an input, inside one, holds one, is an
    existing non-empty directory (without --overwrite), or cannot be created."""
    out = Path(out).resolve()
    for given in inputs:
        src = Path(given).resolve()
        if out == src:
            raise ValueError(
                f"{flag} {out} is the input directory; writing there would replace it. Choose another {flag}"
            )
        if src in out.parents or out in src.parents:
            raise ValueError(f"{flag} {out} is inside {src} (or holds it); choose a directory outside the input")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(
            f"{flag} {out} exists and is not empty; pass --overwrite to replace the model there "
            f"(other files in it are kept)"
        )
    _check_writable(out.parent if not out.exists() else out, flag)
    return out


def check_output_file(path: str | Path | None, flag: str = "--json") -> None:
    """Refuse, before any work, an output file whose directory cannot be created or written."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a directory; give a file name")
    _check_writable(path.parent, flag)


def _check_writable(directory: Path, flag: str) -> None:
    probe = directory
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{flag}: cannot create {directory}: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{flag}: cannot write to {probe} (permission denied)")


def add_checkpoint_flags(p: argparse.ArgumentParser, where: str = "--out") -> None:
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help=f"write a resumable checkpoint every N steps (a hidden file beside {where}; removed when the run ends)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its checkpoint (same command, same flags); the result is "
        "the one an uninterrupted run gives",
    )


def checkpoint_for(args, out: str | Path | None, flag: str = "--out"):
    """The Checkpoint the flags ask for (None without them); refuses them without an output path."""
    every, resume = getattr(args, "checkpoint_every", None), getattr(args, "resume", False)
    if every is None and not resume:
        return None
    if out is None:
        raise ValueError(f"--checkpoint-every and --resume need {flag}: the checkpoint is kept beside it")
    from ..train import Checkpoint

    out = Path(out)
    path = out.parent / f".{out.name}.checkpoint.safetensors"
    if resume and not path.is_file():
        print(f"no checkpoint at {path}: starting from the beginning")
    return Checkpoint(path, every=every if every is not None else 200, resume=resume)


def writing(path):
    """`atomic.exclusive(path)` on the rank that writes (every process outside torchrun); nothing on the others."""
    from ..atomic import exclusive
    from ..train import distributed

    return exclusive(path) if distributed.is_main() else contextlib.nullcontext()


def done_with(checkpoint) -> None:
    """Remove a finished run's checkpoint (rank 0's, under torchrun)."""
    from ..train import distributed

    if checkpoint is not None and distributed.is_main():
        with contextlib.suppress(OSError):
            checkpoint.path.unlink()


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return n


def add_subset_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--train-samples",
        type=_positive_int,
        default=None,
        metavar="N",
        help="train on a seeded subset of N samples of the task (the paper's text setting: at most 5,000)",
    )
    p.add_argument(
        "--test-samples",
        type=_positive_int,
        default=None,
        metavar="N",
        help="evaluate on a seeded subset of N test samples (default: all; a large text test set costs "
        "minutes per evaluation on a CPU)",
    )


def subset_task(task, args):
    """The task cut to --train-samples / --test-samples (seed 0: the same subset for every run)."""
    n_train, n_test = getattr(args, "train_samples", None), getattr(args, "test_samples", None)
    if n_train is None and n_test is None:
        return task
    return task.subset(n_train=n_train, n_test=n_test, seed=0)
