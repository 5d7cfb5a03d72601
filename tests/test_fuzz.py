"""Fuzzing every loader: any input either loads or raises the loader's documented error class, never
another exception, and never takes long (hypothesis's deadline bounds each case).

| loader | documented error |
|---|---|
| model directory (`load`, `verify`, `read_header`): safetensors header, trainlock.json | ArtifactError |
| `load_npz`, `read_idx`, `load_idx_dir` | TaskDataError |
| `lock_factory` (lock specs), `from_dict` (configs) | ValueError (UnknownNameError for an unknown name) |
"""

import contextlib
import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trainlock as tl
from trainlock.attacks import FineTuneConfig
from trainlock.certify.verify import verify
from trainlock.config import from_dict
from trainlock.io.artifacts import META, WEIGHTS, ArtifactError, read_header
from trainlock.locks import SpecDefConfig, lock_factory
from trainlock.red_team import RedTeamConfig
from trainlock.registry import UnknownNameError
from trainlock.tasks import TaskDataError
from trainlock.tasks.files import load_idx_dir, load_npz, read_idx

FUZZ = settings(
    max_examples=60, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    return tl.save(
        tl.models.build("mlp", input_shape=[1, 8, 8], num_classes=10, hidden=[4]),
        tmp_path_factory.mktemp("fz") / "m",
        {"task": "digits"},
    )


def _fresh(model_dir, tmp_path_factory):
    import shutil

    d = tmp_path_factory.mktemp("case") / "m"
    shutil.copytree(model_dir, d)
    return d


def _model_dir_loaders(d):
    for fn in (lambda: tl.load(d), lambda: verify(d), lambda: read_header(d)):
        with contextlib.suppress(ArtifactError):
            fn()


@FUZZ
@given(meta=JSON)
def test_trainlock_json_any_value(model_dir, tmp_path_factory, meta):
    d = _fresh(model_dir, tmp_path_factory)
    (d / META).write_text(json.dumps(meta))
    _model_dir_loaders(d)


@FUZZ
@given(
    edit=st.dictionaries(
        st.sampled_from(
            [
                "architecture",
                "task",
                "locks",
                "certificates",
                "hashes",
                "metrics",
                "structure",
                "conservation",
                "lock",
                "weights_sha256",
                "format",
            ]
        ),
        JSON,
        min_size=1,
        max_size=3,
    )
)
def test_trainlock_json_fields_of_any_type(model_dir, tmp_path_factory, edit):
    d = _fresh(model_dir, tmp_path_factory)
    meta = json.loads((d / META).read_text())
    meta.update(edit)
    (d / META).write_text(json.dumps(meta))
    _model_dir_loaders(d)


@FUZZ
@given(data=st.binary(max_size=400), header=st.binary(max_size=200))
def test_safetensors_bytes(model_dir, tmp_path_factory, data, header):
    d = _fresh(model_dir, tmp_path_factory)
    (d / WEIGHTS).write_bytes(data)
    _model_dir_loaders(d)
    (d / WEIGHTS).write_bytes(struct.pack("<Q", len(header)) + header + data)  # a length prefix, then junk
    _model_dir_loaders(d)


@FUZZ
@given(json_header=JSON)
def test_safetensors_header_json(model_dir, tmp_path_factory, json_header):
    d = _fresh(model_dir, tmp_path_factory)
    raw = json.dumps(json_header).encode()
    (d / WEIGHTS).write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 64)
    _model_dir_loaders(d)


ARRAYS = st.dictionaries(
    st.sampled_from(["x_train", "y_train", "x_test", "y_test", "other"]),
    st.tuples(
        st.sampled_from(["float32", "int64", "uint8", "float64", "bool"]),
        st.lists(st.integers(0, 5), min_size=0, max_size=4),
    ),
    max_size=5,
)


@FUZZ
@given(arrays=ARRAYS, junk=st.binary(max_size=100))
def test_npz(tmp_path_factory, arrays, junk):
    d = tmp_path_factory.mktemp("npz")
    rng = np.random.default_rng(0)
    np.savez(d / "t.npz", **{k: (rng.random(size=shape) * 12).astype(dtype) for k, (dtype, shape) in arrays.items()})
    (d / "junk.npz").write_bytes(junk)
    for f in ("t.npz", "junk.npz"):
        with contextlib.suppress(TaskDataError):
            load_npz(d / f)


@FUZZ
@given(raw=st.binary(max_size=200), magic=st.sampled_from([b"\0\0\x08\x01", b"\0\0\x08\x03", b"\0\0\x0d\x02", b""]))
def test_idx(tmp_path_factory, raw, magic):
    d = tmp_path_factory.mktemp("idx")
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (d / name).write_bytes(magic + raw)
    for fn in (
        lambda: read_idx(d / "train-images-idx3-ubyte"),
        lambda: read_idx(d / "train-labels-idx1-ubyte", 1),
        lambda: load_idx_dir(d),
    ):
        with contextlib.suppress(TaskDataError):
            fn()


@FUZZ
@given(
    spec=JSON
    | st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                [
                    "specdef",
                    "frozen",
                    "sparsity",
                    "spectral-cap",
                    "energy",
                    "architecture",
                    "composite",
                    "specdef-reparam",
                    "nope",
                ]
            )
        },
        optional={
            "names": JSON,
            "k": JSON,
            "fraction": JSON,
            "max_sigma": JSON,
            "locks": JSON,
            "mode": JSON,
            "alpha": JSON,
            "loop": JSON,
            "top_k": JSON,
            "factor": JSON,
            "bad_task": JSON,
            "delta": JSON,
            "include": JSON,
        },
    )
)
def test_lock_specs(spec):
    with contextlib.suppress(ValueError, UnknownNameError):
        lock_factory(spec)


@FUZZ
@given(cls=st.sampled_from([SpecDefConfig, FineTuneConfig, RedTeamConfig, tl.LoopConfig]), data=JSON)
def test_configs(cls, data):
    with contextlib.suppress(ValueError):
        from_dict(cls, data)
