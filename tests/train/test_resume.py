"""A run killed with kill -9 and resumed with --resume ends with the weights of a run never stopped (bit for
bit on CPU): train, lock and attack, each through the command line in a subprocess."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="kills subprocesses")


def _command(kind, base, out):
    common = ["--device", "cpu", "--batch-size", "8", "--seed", "3"]
    if kind == "train":
        return [
            "train",
            "--task",
            "digits",
            "--model",
            "mlp",
            "--model-kwargs",
            '{"hidden": [64]}',
            "--optimizer",
            "adam",
            "--lr",
            "0.003",
            "--epochs",
            "12",
            "--out",
            str(out),
            *common,
        ]
    if kind == "lock":
        return ["lock", str(base), "--out", str(out), "--epochs", "6", "--lr", "1", *common]
    return [
        "attack",
        str(base),
        "--task",
        "digits",
        "--head",
        "reset",
        "--optimizer",
        "sgd",
        "--lr",
        "0.01",
        "--epochs",
        "12",
        "--eval-every",
        "100",
        "--save",
        str(out),
        *common,
    ]


def _run(argv, wait=True):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainlock.cli.main", *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    if wait:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
    return proc


@pytest.mark.parametrize("kind", ["train", "lock", "attack"])
def test_killed_and_resumed_equals_uninterrupted(kind, base, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    _run(_command(kind, base, ref))
    ckpt = tmp_path / ".out.checkpoint.safetensors"
    proc = _run([*_command(kind, base, out), "--checkpoint-every", "7"], wait=False)
    t0 = time.time()
    while not ckpt.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() - t0 < 120
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the run ended before it was killed: make it longer"
    assert ckpt.exists()
    _run([*_command(kind, base, out), "--checkpoint-every", "7", "--resume"])
    a, b = load_file(str(ref / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not ckpt.exists()  # removed once the run finished


def test_a_checkpoint_from_another_run_is_refused(base, tmp_path):
    out = tmp_path / "out"
    proc = _run([*_command("train", base, out), "--checkpoint-every", "5"], wait=False)
    ckpt = tmp_path / ".out.checkpoint.safetensors"
    t0 = time.time()
    while not ckpt.exists():  # never wait forever: the run may have died or finished first
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() - t0 < 120
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    argv = [*_command("train", base, out), "--resume", "--lr", "0.5"]
    proc = _run(argv, wait=False)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and b"another loop configuration" in err
