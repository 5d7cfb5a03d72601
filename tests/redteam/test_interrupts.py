"""The red team under interruption: Ctrl-C stops within seconds and keeps every finished row; kill -9 of
the main process leaves no worker behind; a results directory is resumed only for the model it holds."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import trainlock as tl
from trainlock.red_team import RedTeamConfig, RunnerConfig, redteam
from trainlock.train import LoopConfig


@pytest.fixture(scope="module")
def setup(tmp_path_factory, digits, digits_permuted):
    d = tmp_path_factory.mktemp("rt")
    torch.manual_seed(0)
    model = tl.models.build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[16])
    tl.save(model, d / "model", {"task": "digits"})
    p = digits_permuted
    np.savez(
        d / "perm.npz",
        x_train=p.x_train.numpy(),
        y_train=p.y_train.numpy(),
        x_test=p.x_test.numpy(),
        y_test=p.y_test.numpy(),
    )
    return d


def _children(pid: int) -> set[int]:
    """The forked pool workers of `pid` (their command line is the parent's); other children, such as the
    fc-list that a first matplotlib import runs in a fresh environment, are not workers."""
    out = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out |= {int(c) for c in (task / "children").read_text().split()}
    return {c for c in out if b"trainlock" in _cmdline(c)}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start(setup, out):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [
        sys.executable,
        "-m",
        "trainlock.cli.main",
        "redteam",
        str(setup / "model"),
        "--task",
        f"npz:{setup / 'perm.npz'}",
        "--out",
        str(out),
        "--workers",
        "2",
        "--max-steps",
        "60",
        "--batch-size",
        "32",
        "--budget",
        "40",
    ]
    return subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_terminal_sigint,
    )


def _terminal_sigint() -> None:
    """In the child: SIGINT as a terminal gives it. A test suite started in the background by a shell without
    job control (`bash .ci/run &`) inherits SIGINT ignored, and Python keeps an inherited SIG_IGN: the CLI
    would then rightly not see Ctrl-C at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_rows(out: Path, proc, n: int = 1, timeout: float = 120) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        rows = out / "runs.jsonl"
        if rows.is_file() and len(rows.read_text().splitlines()) >= n:
            return len(rows.read_text().splitlines())
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    raise AssertionError("no row finished in time")


def _workers(proc, timeout: float = 60) -> set[int]:
    """The pool's workers, waited for: the suite runs in stages and each stage opens its own pool, so
    between two stages (or during a stage of one run, done in-process) the main process has no children."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        found = _children(proc.pid)
        if found:
            return found
        assert proc.poll() is None, "the red team finished before a pool was seen"
        time.sleep(0.05)
    raise AssertionError("no pool worker appeared in time")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_ctrl_c_stops_within_seconds_keeps_rows_and_leaves_no_process(setup, tmp_path):
    out = tmp_path / "out"
    proc = _start(setup, out)
    _wait_rows(out, proc)
    workers = _workers(proc)
    t0 = time.time()
    proc.send_signal(signal.SIGINT)  # to the main process only, as the issue found
    code = proc.wait(timeout=30)
    took = time.time() - t0
    assert code == 130 and took < 10, (code, took)
    time.sleep(0.5)
    assert not [w for w in workers if _alive(w)]
    kept = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert kept and all("accuracy" in r or "error" in r or r.get("skipped") for r in kept)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_kill_9_leaves_no_worker_behind(setup, tmp_path):
    out = tmp_path / "out"
    proc = _start(setup, out)
    _wait_rows(out, proc)
    workers = _workers(proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 5
    while time.time() < deadline and [w for w in workers if _alive(w)]:
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)]


def test_resume_only_for_the_same_model_and_task(digits, digits_permuted, tmp_path):
    torch.manual_seed(0)
    a = tl.models.build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[8])
    b = tl.models.build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[8])
    cfg = RedTeamConfig(
        loop=LoopConfig(device="cpu", max_steps=3, batch_size=32), budget=1, runner=RunnerConfig(workers=0)
    )
    redteam(a, digits_permuted, cfg, out=tmp_path)
    redteam(a, digits_permuted, cfg, out=tmp_path)  # the same model: resumed
    with pytest.raises(ValueError, match="another model_state_sha256"):
        redteam(b, digits_permuted, cfg, out=tmp_path)
    with pytest.raises(ValueError, match="another task and task_sha256"):
        redteam(a, digits, cfg, out=tmp_path)
