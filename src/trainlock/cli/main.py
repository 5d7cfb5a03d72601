"""`trainlock` command line: a thin layer over the Python API, one module per command group.

A command's flags are added only when that command runs (or its --help is asked for), so
`trainlock --help` imports none of the red team, the optimizer zoo or the analysis modules.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable

from . import attacking, locking, models, studies

EPILOG = """examples:
  trainlock tasks                                    list tasks and whether their data is installed
  trainlock train  --task mnist --model cnn --out runs/base
  trainlock lock   runs/base --out runs/locked --alpha 0.5 --top-k 1 --epochs 5 --lr 5
  trainlock attack runs/locked --task fashion-mnist --optimizer adam --lr 1e-3 --json attack.json
  trainlock eval   runs/locked --task mnist
  trainlock lock   runs/base --out runs/capped --spec '{"type": "spectral-cap", "max_sigma": 2.0}'
  trainlock verify runs/locked                       recompute every claim from the weights
  trainlock redteam runs/locked --task fashion-mnist --budget 20 --base runs/base
  trainlock demo   --quick                           the whole story on smaller subsets (about 5 minutes)

Tasks are registered names (see `trainlock tasks`) or npz:PATH / idx:DIR for your own data.
Your own lock, attack stage, task, model, transform, optimizer or search space, one file each:
  trainlock --plugin my_lock.py lock runs/base --out runs/mine --spec '{"type": "my-lock"}'
  (also TRAINLOCK_PLUGINS=a.py:pkg.mod, and the `trainlock.plugins` entry-point group; docs/extending.md)
`trainlock COMMAND --help` explains each command's flags and their defaults.
"""

DATA_PARALLEL = ("train", "lock", "attack")  # the commands that run under torchrun (see train/distributed.py)

# the commands that only read a model (they write no model directory): they take --unverified
UNVERIFIED = ("eval", "attack", "headstart", "redteam", "relearn", "diagnose", "compact", "locks")

# (name, one-line help, description, add_arguments(parser) or None, run(args) -> exit code)
COMMANDS = [*models.COMMANDS, *locking.COMMANDS, *attacking.COMMANDS, *studies.COMMANDS]


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose refusals are one line on stderr (exit 2): what is wrong and where the
    flags are listed, not the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the flags)\n")


def build_parser(only: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The parser: every command's flags when `only` is None, else only those of the commands named in
    `only` (the others are listed with their one-line help, which is all `trainlock --help` shows)."""
    only = None if only is None else set(only)
    p = Parser(
        prog="trainlock",
        description="Lock models against unauthorized fine-tuning, and attack the lock.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--debug", action="store_true", help="show debug logs and full tracebacks")
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="PATH.py|MODULE",
        help="import a plugin first (repeatable): a .py file or a module that registers locks, attack "
        "stages, transforms, optimizers, tasks, models or tune search spaces; also "
        "TRAINLOCK_PLUGINS (separated by ':') and installed packages' `trainlock.plugins` entry points",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads (default: OMP_NUM_THREADS, else the cores available); idle threads "
        "always sleep (OMP_WAIT_POLICY=PASSIVE unless set)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_line, description, add, run in COMMANDS:
        s = sub.add_parser(
            name,
            help=help_line,
            description=description or help_line[:1].upper() + help_line[1:],
            formatter_class=argparse.RawDescriptionHelpFormatter if description else argparse.HelpFormatter,
        )
        if add is not None and (only is None or name in only):
            add(s)
            if name in UNVERIFIED:
                s.add_argument(
                    "--unverified",
                    action="store_true",
                    help="use a model whose record or files do not match its weights, or are not bound (an edited "
                    "trainlock.json, a changed or missing tokenizer, an older trainlock's directory), with a "
                    "warning; refused by default",
                )
        s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        s.add_argument("--threads", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        s.add_argument("--plugin", action="append", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        s.set_defaults(fn=run)
    return p


def _command(argv: list[str]) -> str | None:
    names = {c[0] for c in COMMANDS}
    return next((a for a in argv if a in names), None)


def _plugin_flags(argv: list[str]) -> list[str]:
    """The --plugin values, read before the parser is built (a plugin's names appear in --help and choices)."""
    out = []
    for i, a in enumerate(argv):
        if a.startswith("--plugin="):
            out.append(a.split("=", 1)[1])
        elif a == "--plugin" and i + 1 < len(argv):
            out.append(argv[i + 1])
    return out


def _threads_flag(argv: list[str]) -> int | None:
    for i, a in enumerate(argv):
        value = (
            a.split("=", 1)[1]
            if a.startswith("--threads=")
            else argv[i + 1]
            if a == "--threads" and i + 1 < len(argv)
            else None
        )
        if value is not None:
            try:
                n = int(value)
            except ValueError:
                n = 0
            if n < 1:
                print(f"trainlock: error: --threads takes a positive integer, got {value!r}", file=sys.stderr)
                raise SystemExit(2)
            return n
    return None


def set_thread_policy(threads: int | None = None) -> int:
    """Before torch starts: idle OpenMP threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE), and
    torch uses `threads` threads, else OMP_NUM_THREADS, else the cores this process may run on. A busy
    machine then slows a run down in proportion, instead of 10x (spinning threads fight each other).
    Variables the user set are kept; `--threads` wins over OMP_NUM_THREADS."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env = os.environ.get("OMP_NUM_THREADS", "")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = threads or (int(env) if env.isdigit() and int(env) > 0 else cores)
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ.setdefault("MKL_NUM_THREADS", str(n))
    if "torch" in sys.modules:  # started already (e.g. main() called from Python): set what can still be set
        sys.modules["torch"].set_num_threads(n)
    return n


def setup_logging(debug: bool = False) -> None:
    """The library logs; the command line shows its INFO lines (progress, per-epoch logs) on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if debug else "%(message)s"))
    root = logging.getLogger("trainlock")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    from .. import plugins
    from ..registry import UnknownNameError

    argv = sys.argv[1:] if argv is None else list(argv)
    set_thread_policy(_threads_flag(argv))
    try:
        plugins.load_all(_plugin_flags(argv))
    except plugins.PluginError as e:
        print(f"trainlock: error: {e}", file=sys.stderr)
        return 2
    command = _command(argv)
    args = build_parser(only=[command] if command else []).parse_args(argv)
    setup_logging(args.debug)
    from ..train import distributed

    if distributed.init_from_env():  # launched by torchrun: data-parallel training, rank 0 writes the outputs
        if command not in DATA_PARALLEL:
            print(
                f"error: {command!r} does not run data-parallel; torchrun runs: {', '.join(DATA_PARALLEL)}",
                file=sys.stderr,
            )
            return 2
        if not distributed.is_main():
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (one copy of the report, from rank 0; open till exit)
    try:
        if getattr(args, "unverified", False):
            if getattr(args, "save", None):
                raise ValueError(
                    "--unverified cannot be used with --save: the saved model would bind claims nobody checked"
                )
            from ..io.artifacts import unverified_loads

            with unverified_loads():
                return args.fn(args)
        return args.fn(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UnknownNameError, ValueError, json.JSONDecodeError, *_data_errors()) as e:
        if args.debug:
            raise
        print(f"error: {_os_error(e, args, argv) if isinstance(e, OSError) else e}", file=sys.stderr)
        return 1 if type(e).__name__ == "BindingError" else 2  # claims or files that fail verification: 1, as verify
    finally:
        from .common import release_outputs

        release_outputs()  # the output locks the command took before its work (check_output_dir)
        distributed.shutdown()


def _os_error(e: OSError, args: argparse.Namespace, argv: list[str]) -> str:
    """An OS error as one line naming the flag (or argument) whose path it is about, not "[Errno 17] File
    exists: 'x'": the flag is the one whose value is the path or a directory above it."""
    import errno
    from pathlib import Path

    name = e.filename
    if name is None:
        return str(e)
    try:
        target = Path(os.fsdecode(name)).resolve()
    except (OSError, RuntimeError, ValueError):
        return str(e)
    flag = None
    for dest, value in vars(args).items():
        if not isinstance(value, str) or not value or dest in ("command", "fn"):
            continue
        try:
            p = Path(value).resolve()
        except (OSError, RuntimeError, ValueError):
            continue
        if p == target or p in target.parents or target in p.parents:
            option = "--" + dest.replace("_", "-")
            flag = option if any(a == option or a.startswith(option + "=") for a in argv) else dest.upper()
            break
    why = {
        errno.EEXIST: "exists and is not a directory" if target.is_file() else "already exists",
        errno.ENOTDIR: "a part of the path is a file, not a directory",
        errno.EACCES: "permission denied",
        errno.ENOENT: "no such file or directory",
        errno.ENOSPC: "no space left on the device",
        errno.EROFS: "read-only file system",
    }.get(e.errno, e.strerror or type(e).__name__)
    where = f"{os.fsdecode(name)}" if flag is None else f"{flag} {os.fsdecode(name)}"
    return f"{where}: {why}"


def _data_errors() -> tuple[type[Exception], ...]:
    from ..io.artifacts import ArtifactError
    from ..tasks import TaskDataError

    return ArtifactError, TaskDataError, OSError


if __name__ == "__main__":
    sys.exit(main())
