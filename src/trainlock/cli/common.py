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
        else:  # numbers: refused at parse time unless finite (the config checks the range, naming the flag)
            kwargs["type"] = {int: int_type(), float: float_type()}.get(kind, kind)
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
    try:
        return dataclasses.replace(defaults, **changes)
    except ValueError as e:  # the config's own check (ranges): say which flag, once (nested configs named it already)
        text = str(e)
        if not text.startswith("--"):
            for f in dataclasses.fields(cls):
                if dataclasses.is_dataclass(getattr(defaults, f.name)) or not f.metadata.get("cli", True):
                    continue
                if f": {f.name} " in text or text.startswith(f"{f.name} "):
                    raise ValueError(f"{_flag(prefix, f.name)}: {text}") from e
        raise


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
    existing non-empty directory (without --overwrite), or cannot be created.

    Before the emptiness check it takes the output lock (`hold_output`), kept until the command ends: a second
    process on the same output is refused at once (one line), and two runs cannot both pass the check."""
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
    _check_writable(out.parent if not out.exists() else out, flag)
    try:
        hold_output(out)
    except OSError as e:
        raise ValueError(f"{flag}: cannot take the output lock beside {out} ({e.strerror or e})") from None
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(
            f"{flag} {out} exists and is not empty; pass --overwrite to replace the model there "
            f"(other files in it are kept)"
        )
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
        type=int_type(1),
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
    from ..train.checkpoint import check_identity

    out = Path(out)
    path = out.parent / f".{out.name}.checkpoint.safetensors"
    if resume and not path.is_file():
        print(f"no checkpoint at {path}: starting from the beginning")
    ck = Checkpoint(path, every=every if every is not None else 200, resume=resume, identity=run_identity(args))
    check_identity(ck)  # a checkpoint of another run (other flags, another input model): refused before work
    return ck


# flags that do not change what a run computes (or name where it writes): not part of its identity
_NOT_IDENTITY = {"fn", "command", "resume", "checkpoint_every", "debug", "threads", "plugin", "overwrite", "json"}


def run_identity(args) -> dict:
    """What a resumable run is: its flags (by name) and the SHA-256 of its input model's weights and record."""
    flags = {}
    for dest, value in sorted(vars(args).items()):
        if dest in _NOT_IDENTITY or dest in ("model_dir", "out", "save") or callable(value):
            continue
        flags["--" + dest.replace("_", "-")] = list(value) if isinstance(value, tuple) else value
    out: dict = {"flags": flags}
    model_dir = getattr(args, "model_dir", None)
    if model_dir is not None:
        from ..io.artifacts import ArtifactError, read_header, read_meta

        try:
            meta, header = read_meta(model_dir), read_header(model_dir)
            out["input"] = {
                "MODEL_DIR weights": meta.get("weights_sha256"),
                "MODEL_DIR trainlock.json": header.get("record_sha256"),
            }
        except ArtifactError:
            pass  # the command's own load reports it
    return out


def load_base(base_dir: str | Path | None, model_dir: str | Path, meta: dict, flag: str = "--base", given: bool = True):
    """(base model, its meta) for 'base - scratch' comparisons, checked before any work: the directory loads
    (verified), is not the model itself, and is the base the lock recorded (`base_state_sha256`), or, for a
    lock that recorded none, has the model's architecture. (None, None) without `base_dir`. A base the user
    gave (`given`) that fails is refused (ValueError / ArtifactError); the recorded default only warns."""
    from ..io.artifacts import ArtifactError, architecture_of, load

    if not base_dir:
        return None, None
    try:
        if Path(base_dir).resolve() == Path(model_dir).resolve():
            raise ValueError(f"{flag} {base_dir} is the model itself, not its unlocked base")
        base, bmeta = load(base_dir)
        state = (bmeta.get("hashes") or {}).get("state")
        if state is not None and state == (meta.get("hashes") or {}).get("state"):
            raise ValueError(f"{flag} {base_dir} holds the same weights as {model_dir}: the model itself, not its base")
        recorded = meta.get("base_state_sha256")
        if recorded is not None and recorded != state:
            raise ValueError(
                f"{flag} {base_dir} is not the base this lock was made from (its weights' state hash "
                f"{str(state)[:16]}... != recorded base_state_sha256 {str(recorded)[:16]}...)"
            )
        mine, theirs = architecture_of(meta), architecture_of(bmeta)
        if recorded is None and mine is not None and theirs is not None and mine != theirs:
            raise ValueError(
                f"{flag} {base_dir} is a {theirs[0]} {theirs[1]} but {model_dir} is a {mine[0]} {mine[1]}: not its base"
            )
    except (ValueError, ArtifactError) as e:
        if given:
            raise
        print(f"no base comparison: {e}")
        return None, None
    return base, bmeta


_HELD_OUTPUTS = contextlib.ExitStack()  # output locks a command holds until it ends (released by `release_outputs`)


def hold_output(path) -> None:
    """Take the output lock on `path` (`writing(path)`) now and keep it until `release_outputs()` (which `main`
    calls when the command ends): every writing command holds its output from before any work."""
    _HELD_OUTPUTS.enter_context(writing(path))


def release_outputs() -> None:
    """Release every lock `hold_output` took."""
    _HELD_OUTPUTS.close()


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


def int_type(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]; anything else (nan, 1e30, abc, out of range) is
    refused at parse time with one line naming the flag."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = None
        if n is None or (low is not None and n < low) or (high is not None and n > high):
            need = (
                "an integer" + (f" >= {low}" if low is not None else "") + (f" <= {high}" if high is not None else "")
            )
            raise argparse.ArgumentTypeError(f"must be {need}, got {text!r}")
        return n

    parse.__name__ = "integer"
    return parse


def float_type(low: float | None = None, high: float | None = None, open_low: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] ((low, high] with `open_low`); nan, inf, 1e400 and
    text are refused at parse time with one line naming the flag."""
    import math

    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            x = math.nan
        ok = math.isfinite(x) and (low is None or (x > low if open_low else x >= low)) and (high is None or x <= high)
        if not ok:
            lo = "" if low is None else (f" > {low:g}" if open_low else f" >= {low:g}")
            hi = "" if high is None else f"{' and' if lo else ''} <= {high:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number{lo}{hi}, got {text!r}")
        return x

    parse.__name__ = "number"
    return parse


_positive_int = int_type(1)


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
        "minutes per evaluation on a CPU; redteam cuts the authorized task's test split to N too)",
    )


def subset_task(task, args):
    """The task cut to --train-samples / --test-samples (seed 0: the same subset for every run)."""
    n_train, n_test = getattr(args, "train_samples", None), getattr(args, "test_samples", None)
    if n_train is None and n_test is None:
        return task
    return task.subset(n_train=n_train, n_test=n_test, seed=0)
