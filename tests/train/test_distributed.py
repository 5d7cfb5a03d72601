"""Data-parallel training under torchrun: 2 CPU processes (gloo), each a shard of every minibatch, end with the
weights of a single-process run with the same global batch (to float rounding); only rank 0 writes."""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from trainlock.train import distributed

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or not torch.distributed.is_available(), reason="gloo process group on Linux"
)

# measured (2026-12-01): max |w_2ranks - w_1process| 1.2e-7 for the lock, 3.7e-8 for train (float32 summation
# order: two half-batch means averaged vs one full-batch mean), weights up to 0.51 in magnitude
TOL = 1e-5


def _run(argv, nproc=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    launch = (
        [sys.executable, "-m", "trainlock"]
        if nproc is None
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "trainlock",
        ]
    )
    proc = subprocess.run([*launch, *argv], env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return proc.stdout.decode()


def _max_diff(a, b):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


@pytest.mark.parametrize("kind", ["lock", "train"])
def test_two_ranks_match_one_process_with_the_same_global_batch(kind, base, tmp_path):
    # 1280 training samples, global batch 64: every minibatch splits into two shards of 32
    if kind == "lock":
        argv = ["lock", str(base), "--epochs", "2", "--lr", "1", "--alpha", "0.5"]
    else:
        argv = [
            "train",
            "--task",
            "digits",
            "--model",
            "mlp",
            "--model-kwargs",
            '{"hidden": [32]}',
            "--optimizer",
            "adam",
            "--lr",
            "0.003",
            "--epochs",
            "2",
        ]
    common = [
        "--device",
        "cpu",
        "--batch-size",
        "64",
        "--seed",
        "3",
        "--train-samples",
        "1280",
        "--test-samples",
        "200",
    ]
    _run([*argv, *common, "--out", str(tmp_path / "one")])
    report = _run([*argv, *common, "--out", str(tmp_path / "two")], nproc=2)
    diff = _max_diff(tmp_path / "one", tmp_path / "two")
    assert diff <= TOL, f"max |w_2ranks - w_1process| = {diff:.3g}"
    assert report.count("saved") <= 1  # rank 0 alone reports (and writes)


def test_fsdp_lock_matches_one_process(base, tmp_path):
    """`lock --fsdp`: parameters sharded over 2 ranks by FSDP2, the spectral term on the unsharded weights."""
    argv = [
        "lock",
        str(base),
        "--epochs",
        "2",
        "--lr",
        "1",
        "--alpha",
        "0.5",
        "--device",
        "cpu",
        "--batch-size",
        "64",
        "--seed",
        "3",
        "--train-samples",
        "1280",
        "--test-samples",
        "200",
    ]
    _run([*argv, "--out", str(tmp_path / "one")])
    _run([*argv, "--fsdp", "--out", str(tmp_path / "two")], nproc=2)
    diff = _max_diff(tmp_path / "one", tmp_path / "two")
    assert diff <= TOL, f"max |w_fsdp - w_1process| = {diff:.3g}"


def test_helpers_without_a_process_group():
    x, y = torch.arange(10).view(5, 2), torch.arange(5)
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert distributed.shard(x, y)[0] is x
    assert distributed.all_finite(float("nan"), torch.device("cpu")) == (
        pytest.approx(float("nan"), nan_ok=True),
        False,
    )
    assert not distributed.init_from_env()  # no WORLD_SIZE: nothing to join
    assert not distributed.fsdp_requested() and not distributed.is_fsdp(torch.nn.Linear(2, 2))


def test_a_command_that_is_not_data_parallel_is_refused_under_torchrun(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "trainlock",
            "tasks",
        ],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode != 0 and b"does not run data-parallel" in proc.stderr


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="nccl data parallelism needs 2 GPUs")
@pytest.mark.parametrize("fsdp", [False, True])
def test_two_gpus_with_nccl_match_one_process(fsdp, base, tmp_path):
    argv = [
        "lock",
        str(base),
        "--epochs",
        "2",
        "--lr",
        "1",
        "--alpha",
        "0.5",
        "--device",
        "cuda",
        "--batch-size",
        "64",
        "--seed",
        "3",
        "--train-samples",
        "1280",
        "--test-samples",
        "200",
    ]
    _run([*argv, "--out", str(tmp_path / "one")])
    _run([*argv, *(["--fsdp"] if fsdp else []), "--out", str(tmp_path / "two")], nproc=2)
    assert _max_diff(tmp_path / "one", tmp_path / "two") <= 1e-4  # TF32 / cuBLAS reductions differ more than CPU's
