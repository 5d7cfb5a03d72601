"""Classification tasks: built-in offline data sets, derived tasks, and your own files.

`get(name)` takes a registered name (see `names()`), or `npz:PATH`, `idx:DIR`,
`torchvision:NAME`, `hf:DATASET`. Importing this package loads no data.
"""

from __future__ import annotations

from ..registry import UnknownNameError
from .base import TASKS, Task, TaskDataError, TaskSpec, register_task
from .builtin import permuted
from .files import read_idx
from .lookup import FORMS, as_task, available, get, names
from .text import TextTask, for_model

__all__ = [
    "FORMS",
    "TASKS",
    "Task",
    "TaskDataError",
    "TaskSpec",
    "TextTask",
    "UnknownNameError",
    "as_task",
    "available",
    "for_model",
    "get",
    "names",
    "permuted",
    "read_idx",
    "register_task",
]
