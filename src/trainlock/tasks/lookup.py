"""Finding a task by name: a registered name, or one of the npz: / idx: / csv: / jsonl: / bigbench: /
torchvision: / hf: forms."""

from __future__ import annotations

from ..registry import UnknownNameError
from . import bigbench, builtin, extra  # noqa: F401  (register the built-in tasks)
from .base import TASKS, Task, TaskDataError
from .files import load_hf, load_idx_dir, load_npz, load_torchvision
from .text import TextTask, load_csv, load_jsonl

_PREFIXES = {
    "npz:": load_npz,
    "idx:": load_idx_dir,
    "csv:": load_csv,
    "jsonl:": load_jsonl,
    "torchvision:": load_torchvision,
    "hf:": load_hf,
    "bigbench:": bigbench.load,
}
FORMS = (
    "npz:PATH (x_train/y_train/x_test/y_test arrays), idx:DIR (MNIST-format IDX files), "
    "csv:PATH / jsonl:PATH (text, label, optional text_pair and split), "
    "bigbench:TASK (a BIG-bench task fetched once with `trainlock fetch bigbench --tasks TASK`), "
    "torchvision:NAME, hf:DATASET"
)


def get(name: str) -> Task:
    """The Task called `name`: a registered name or one of the npz:/idx:/torchvision:/hf: forms."""
    if not isinstance(name, str):
        raise TaskDataError(f"a task name is a string (e.g. 'mnist', 'npz:PATH'), got {type(name).__name__}: {name!r}")
    for prefix, loader in _PREFIXES.items():
        if name.startswith(prefix):
            arg = name[len(prefix) :]
            if not arg:
                raise TaskDataError(f"task {name!r} names no {prefix[:-1]} source; use {prefix}...")
            return loader(arg)
    try:
        spec = TASKS.get(name)
    except UnknownNameError as e:
        raise UnknownNameError(f"{e}; or use {FORMS}") from None
    if not spec.available():
        raise TaskDataError(f"task {name!r} needs data that is not installed; install it with: {spec.install_hint}")
    return spec.load()


def as_task(task: Task | TextTask | str, what: str = "task") -> Task | TextTask:
    """`task` itself, or the Task a name names; None and other types are refused with a clear error."""
    if isinstance(task, (Task, TextTask)):
        return task
    if isinstance(task, str):
        return get(task)
    raise ValueError(
        f"{what} must be a Task or a task name (e.g. 'mnist', 'npz:PATH'), got {type(task).__name__}: {task!r}"
    )


def names() -> list[str]:
    """The registered task names, sorted."""
    return TASKS.names()


def available() -> list[dict]:
    """One dict per registered task: name, present (data installed), install_hint, description."""
    return [
        {"name": n, "present": bool(s.available()), "install_hint": s.install_hint, "description": s.description}
        for n, s in ((n, TASKS.get(n)) for n in TASKS.names())
    ]
