"""The Task: a supervised classification data set held as tensors, plus its registry entry."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..registry import Registry


class TaskDataError(RuntimeError):
    """A task's data is missing, unreadable, or does not fit the model."""


MAX_CLASSES = 100_000  # a label beyond this is an id, a hash or a typo, not a class index


def check_label_range(source: str, top: int, what: str = "the labels") -> None:
    """TaskDataError when the largest label is no class index of a sane classifier (every loader alike)."""
    if top >= MAX_CLASSES:
        raise TaskDataError(
            f"{source}: {what} go up to {top}; labels are class indices 0..K-1 with K at most {MAX_CLASSES:,} "
            f"(remap them first, e.g. np.unique(y, return_inverse=True))"
        )


def check_classes(source: str, train_labels, names: list[str] | None = None) -> None:
    """TaskDataError when the training labels hold fewer than two classes (every loader alike): a model trained
    on one class reaches 'accuracy 1.0' by predicting it, which measures nothing. `names`: the label names."""
    found = sorted({int(v) for v in train_labels})
    if len(found) < 2:
        shown = ", ".join(repr(names[i]) if names else str(i) for i in found) or "none"
        raise TaskDataError(
            f"{source}: the training labels hold one class only ({shown}); a classifier needs at least 2 classes"
        )


@dataclass
class Task:
    """A classification task. Inputs are float32 `(N, *input_shape)`, labels int64 `(N,)`.

    Images are `(C, H, W)` with values in [0, 1]; vector tasks are `(D,)`.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    description: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def chance(self) -> float:
        """Accuracy of the majority-class guess on the test set."""
        counts = torch.bincount(self.y_test, minlength=self.num_classes)
        return float(counts.max()) / max(1, len(self.y_test))

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> Task:
        """A random subset (fixed by `seed`); `None` keeps a split whole."""
        g = torch.Generator().manual_seed(seed)

        def pick(x, y, n):
            if n is None or n >= len(y):
                return x, y
            idx = torch.randperm(len(y), generator=g)[:n]
            return x[idx], y[idx]

        xtr, ytr = pick(self.x_train, self.y_train, n_train)
        xte, yte = pick(self.x_test, self.y_test, n_test)
        return dataclasses.replace(self, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)

    def adapt(self, input_shape: tuple[int, ...] | list[int]) -> Task:
        """Fit this task's inputs to a model's `input_shape`.

        Documented behaviour: images with the same channel count but another size are resized
        (bilinear); a single-channel image becomes C channels by repetition; a flat model input of
        D features accepts images of C*H*W == D (flattened). Anything else raises TaskDataError.
        """
        target = tuple(int(s) for s in input_shape)
        if self.input_shape == target:
            return self
        xtr, xte = _adapt(self.x_train, target, self), _adapt(self.x_test, target, self)
        return dataclasses.replace(self, x_train=xtr, y_train=self.y_train, x_test=xte, y_test=self.y_test)


def _adapt(x: torch.Tensor, target: tuple[int, ...], task: Task) -> torch.Tensor:
    src = tuple(x.shape[1:])
    if len(target) == 1 and x[0].numel() == target[0]:
        return x.reshape(len(x), target[0])
    if len(src) == 3 and len(target) == 3:
        c, (tc, th, tw) = src[0], target
        if c == 1 and tc > 1:
            x = x.expand(-1, tc, -1, -1)
        elif c != tc:
            raise TaskDataError(f"task {task.name!r} has {c}-channel images but the model expects {tc} channels")
        if (x.shape[2], x.shape[3]) != (th, tw):
            x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False)
        return x.contiguous()
    raise TaskDataError(
        f"task {task.name!r} has inputs of shape {src} that do not fit the model's input shape "
        f"{target}; images are resized to other image sizes, and flat inputs must have the same "
        f"number of features"
    )


@dataclass(frozen=True)
class TaskSpec:
    """A registry entry: how to load a task, whether its data is present, how to install it."""

    name: str
    load: Callable[[], Task]
    available: Callable[[], bool]
    install_hint: str
    description: str = ""


TASKS: Registry[TaskSpec] = Registry("task")


def register_task(
    name: str, *, description: str = "", available: Callable[[], bool] | None = None, install_hint: str = ""
) -> Callable[[Callable[[], Task]], Callable[[], Task]]:
    """Decorator: register a function returning the Task `name` (called when the task is used, not at
    registration; cache it yourself if loading is slow). `available` says whether its data is present
    (default: always), `install_hint` how to get it."""

    def deco(load: Callable[[], Task]) -> Callable[[], Task]:
        TASKS.add(name, TaskSpec(name, load, available or (lambda: True), install_hint or "-", description))
        return load

    return deco
