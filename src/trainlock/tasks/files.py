"""Bring-your-own data: `npz:PATH`, `idx:DIR`, and the optional online `torchvision:` / `hf:` loaders."""

from __future__ import annotations

import gzip
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .base import Task, TaskDataError, check_classes, check_label_range

ONLINE_HINT = "pip install 'trainlock[online]'"
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
IDX_FILES = {  # array name -> IDX file stem (an optional `.gz` suffix is accepted)
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# IDX type code -> numpy dtype (multi-byte values are big-endian).
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# ---------------------------------------------------------------- arrays -> Task


def task_from_arrays(name: str, arrays: dict[str, np.ndarray], source: str, description: str = "") -> Task:
    """Validate x_train/y_train/x_test/y_test numpy arrays and build a Task from them."""
    x_train, x_test = (_inputs(arrays[k], k, source) for k in ("x_train", "x_test"))
    y_train, y_test = (_labels(arrays[k], k, source) for k in ("y_train", "y_test"))
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise TaskDataError(f"{source}: x_{split} has {len(x)} rows but y_{split} has {len(y)} labels")
        if len(x) == 0:
            raise TaskDataError(f"{source}: the {split} split is empty")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise TaskDataError(
            f"{source}: train and test inputs differ in shape: x_train {tuple(x_train.shape[1:])} "
            f"vs x_test {tuple(x_test.shape[1:])} per example"
        )
    check_classes(source, np.unique(y_train))
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return Task(
        name=name,
        x_train=torch.from_numpy(x_train),
        y_train=torch.from_numpy(y_train),
        x_test=torch.from_numpy(x_test),
        y_test=torch.from_numpy(y_test),
        num_classes=num_classes,
        description=description or f"your data from {source}",
        meta={"source": source},
    )


def _inputs(x: np.ndarray, key: str, source: str) -> np.ndarray:
    """Inputs -> float32 `(N, C, H, W)` for images or `(N, D)` for flat features."""
    if x.ndim not in (2, 3, 4):
        raise TaskDataError(
            f"{source}: {key} has shape {x.shape} ({x.ndim}-D); expected N x D features, "
            f"N x H x W images, or N x C x H x W images"
        )
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating) or x.dtype == np.bool_:
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise TaskDataError(f"{source}: {key} contains NaN or infinite values")
    else:
        raise TaskDataError(f"{source}: {key} has dtype {x.dtype}; inputs must be uint8 (scaled by 1/255) or float")
    if x.ndim == 3:  # (N, H, W) -> (N, 1, H, W)
        x = x[:, None]
    return np.ascontiguousarray(x)


def _labels(y: np.ndarray, key: str, source: str) -> np.ndarray:
    """Labels -> int64 `(N,)`; they must be non-negative integers."""
    if y.ndim != 1:
        raise TaskDataError(f"{source}: {key} has shape {y.shape}; labels must be 1-D (N,)")
    if not np.issubdtype(y.dtype, np.integer):
        raise TaskDataError(f"{source}: {key} has dtype {y.dtype}; labels must be integers (e.g. y.astype(np.int64))")
    if len(y) and y.min() < 0:
        raise TaskDataError(f"{source}: {key} has negative labels (min {int(y.min())}); use 0..K-1")
    if len(y):  # checked before the cast: a uint64 beyond int64 would wrap
        check_label_range(source, int(y.max()), f"the labels of {key}")
    return y.astype(np.int64)


# ---------------------------------------------------------------- npz:PATH


def load_npz(path: str | Path, name: str | None = None) -> Task:
    """Load `npz:PATH`: arrays x_train, y_train, x_test, y_test in one .npz file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TaskDataError(f"npz file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise TaskDataError(f"{path}: is a single .npy array, not an .npz archive (use np.savez)")
        with data:
            missing = [k for k in NPZ_ARRAYS if k not in data.files]
            if missing:
                raise TaskDataError(
                    f"{path}: missing array(s) {', '.join(missing)}; present: "
                    f"{', '.join(data.files) or '(none)'}; needed: {', '.join(NPZ_ARRAYS)}"
                )
            arrays = {k: data[k] for k in NPZ_ARRAYS}  # reads (and CRC-checks) every member
    except TaskDataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise TaskDataError(f"{path}: not a valid .npz file (corrupt, truncated, or pickled): {e}") from None
    return task_from_arrays(name or f"npz:{path}", arrays, source=str(path))


# ---------------------------------------------------------------- idx:DIR


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (plain or gzip); `ndim` (3 images, 1 labels) is checked when given."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise TaskDataError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    zero, code, dims = struct.unpack(">HBB", raw[:4])
    want = f"0x{0x0800 | ndim:08X}" if ndim else "0x000008NN"
    if zero != 0 or code not in IDX_DTYPES:
        raise TaskDataError(f"{path}: bad IDX magic number 0x{raw[:4].hex().upper()} (expected {want})")
    if ndim is not None and dims != ndim:
        raise TaskDataError(f"{path}: IDX file has {dims} dimension(s), expected {ndim} (magic {want})")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise TaskDataError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    dtype = np.dtype(IDX_DTYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise TaskDataError(
            f"{path}: header says shape {shape} ({expected} data bytes) but the file has "
            f"{len(raw) - header} data bytes (truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except FileNotFoundError:
        raise TaskDataError(f"IDX file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as e:
        raise TaskDataError(f"{path}: cannot read gzip IDX file (truncated or corrupt): {e}") from None


def find_idx_files(folder: str | Path) -> dict[str, Path] | None:
    """The four MNIST-style IDX files in `folder` (plain or .gz), or None if any is missing."""
    folder = Path(folder).expanduser()
    found = {}
    for key, stem in IDX_FILES.items():
        hits = [folder / n for n in (stem, stem + ".gz") if (folder / n).is_file()]
        if not hits:
            return None
        found[key] = hits[0]
    return found


def load_idx_dir(folder: str | Path, name: str | None = None, description: str = "") -> Task:
    """Load `idx:DIR`: MNIST-format train/t10k images and labels (gz or plain)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise TaskDataError(f"IDX folder not found: {folder}")
    files = find_idx_files(folder)
    if files is None:
        present = ", ".join(sorted(p.name for p in folder.iterdir())) or "(empty)"
        raise TaskDataError(f"{folder}: needs {', '.join(s + '[.gz]' for s in IDX_FILES.values())}; present: {present}")
    arrays = {k: read_idx(p, ndim=3 if k.startswith("x") else 1) for k, p in files.items()}
    return task_from_arrays(name or f"idx:{folder}", arrays, source=str(folder), description=description)


# ---------------------------------------------------------------- online (optional extras)


def load_torchvision(dataset: str) -> Task:
    """Load `torchvision:NAME` (e.g. CIFAR10, MNIST), downloading to ~/.cache/trainlock/torchvision."""
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise TaskDataError(f"torchvision:{dataset} needs torchvision; install it with: {ONLINE_HINT}") from None
    cls = getattr(tvd, dataset, None)
    if not isinstance(cls, type):
        raise TaskDataError(f"torchvision has no data set {dataset!r} (try CIFAR10, MNIST, FashionMNIST)")
    root = Path("~/.cache/trainlock/torchvision").expanduser()
    arrays = {}
    for split, train in (("train", True), ("test", False)):
        ds = cls(str(root), train=train, download=True)
        x = np.asarray(ds.data)  # (N, H, W) or (N, H, W, C) uint8
        arrays[f"x_{split}"] = x.transpose(0, 3, 1, 2) if x.ndim == 4 else x
        arrays[f"y_{split}"] = np.asarray(ds.targets, dtype=np.int64)
    return task_from_arrays(f"torchvision:{dataset}", arrays, source=f"torchvision.datasets.{dataset}")


def load_hf(dataset: str) -> Task:
    """Load `hf:DATASET` from Hugging Face: its first image column and its label column."""
    try:
        import datasets
    except ImportError:
        raise TaskDataError(f"hf:{dataset} needs the datasets package; install it with: {ONLINE_HINT}") from None
    ds = datasets.load_dataset(dataset)
    if not {"train", "test"} <= set(ds):
        raise TaskDataError(f"hf:{dataset} has splits {sorted(ds)}; need 'train' and 'test'")
    feats = ds["train"].features
    img = next((c for c, f in feats.items() if isinstance(f, datasets.Image)), None)
    lab = next((c for c, f in feats.items() if isinstance(f, datasets.ClassLabel)), "label")
    if img is None or lab not in feats:
        raise TaskDataError(f"hf:{dataset} needs an image column and a label column; has {list(feats)}")
    arrays = {}
    for split in ("train", "test"):
        x = np.stack([np.asarray(im) for im in ds[split][img]])  # (N, H, W) or (N, H, W, C)
        arrays[f"x_{split}"] = x.transpose(0, 3, 1, 2) if x.ndim == 4 else x
        arrays[f"y_{split}"] = np.asarray(ds[split][lab], dtype=np.int64)
    return task_from_arrays(f"hf:{dataset}", arrays, source=f"Hugging Face {dataset}")
