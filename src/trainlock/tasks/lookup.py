"""Finding a task by name: a registered name, or one of the npz: / idx: / csv: / jsonl: / bigbench: /
torchvision: / hf: forms."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path

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
    "torchvision:NAME, hf:DATASET; any of them followed by [:K] keeps its first K classes (mnist[:4])"
)


def get(name: str) -> Task:
    """The Task called `name`: a registered name or one of the npz:/idx:/torchvision:/hf: forms; any of them
    followed by `[:K]` keeps its first K classes (`mnist[:4]`: digits 0-3, for a model with 4 outputs)."""
    if not isinstance(name, str):
        raise TaskDataError(f"a task name is a string (e.g. 'mnist', 'npz:PATH'), got {type(name).__name__}: {name!r}")
    m = _FIRST.fullmatch(name)
    if m:
        return first_classes(get(m.group(1)), int(m.group(2)), name)
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
    return fresh_copy(spec.load())


_FIRST = re.compile(r"(.+)\[:(\d+)\]")


def first_classes(task: Task, k: int, name: str) -> Task:
    """`task` cut to its examples of classes 0..k-1 (a restricted proxy domain with as many classes as a model
    has outputs); refuses a text task, k < 2 and k above the task's classes."""
    if not isinstance(task, Task):
        raise TaskDataError(f"task {name!r}: [:K] keeps the first K classes of a tensor task, not of {task.name!r}")
    if not 2 <= k <= task.num_classes:
        raise TaskDataError(f"task {name!r}: K must be in 2..{task.num_classes} (the task's classes), got {k}")
    tr, te = task.y_train < k, task.y_test < k
    return dataclasses.replace(
        task,
        name=name,
        x_train=task.x_train[tr],
        y_train=task.y_train[tr],
        x_test=task.x_test[te],
        y_test=task.y_test[te],
        num_classes=k,
        description=f"{task.description} (classes 0-{k - 1})",
        meta=copy.deepcopy(task.meta),
    )


def fresh_copy(task):
    """A Task (or TextTask) equal to `task` that shares none of its mutable data: registered loaders cache their
    Task, and a caller's in-place edit (`get("digits").x_train.mul_(0)`) must not reach the next caller. The
    tensors are copied (one memcpy: about 0.1 s and the data's size in memory for MNIST, once per `get`)."""
    if isinstance(task, Task):
        return dataclasses.replace(
            task,
            x_train=task.x_train.clone(),
            y_train=task.y_train.clone(),
            x_test=task.x_test.clone(),
            y_test=task.y_test.clone(),
            meta=copy.deepcopy(task.meta),
        )
    if isinstance(task, TextTask):
        lists = ("texts_train", "labels_train", "texts_test", "labels_test", "label_names", "pairs_train", "pairs_test")
        changes = {k: None if getattr(task, k) is None else list(getattr(task, k)) for k in lists}
        return dataclasses.replace(task, meta=copy.deepcopy(task.meta), **changes)
    return task


_FILE_FORMS = ("npz:", "idx:", "csv:", "jsonl:")


def canonical_name(name: str) -> str:
    """A task name with its file path resolved (`npz:data/./x.npz` and `npz:/abs/data/x.npz` name one file);
    registered names and the other forms unchanged."""
    if isinstance(name, str):
        for prefix in _FILE_FORMS:
            if name.startswith(prefix) and name[len(prefix) :]:
                return prefix + str(Path(name[len(prefix) :]).expanduser().resolve())
    return name


def same_task(a: str, b: str) -> bool:
    """Whether two task names name the same task (file forms compared by resolved path)."""
    return canonical_name(a) == canonical_name(b)


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
