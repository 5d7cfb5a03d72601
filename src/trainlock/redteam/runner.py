"""Run attack specs against one model: in a process pool, resumable, one JSON row per run.

Each run uses one torch thread whatever the pool size, so a run's numbers (and the worst case)
do not depend on the worker count. Rows are appended to `runs.jsonl` as runs finish; a restarted
sweep skips every spec whose key is already there.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..attacks import finetune
from ..attacks.transforms import TRANSFORMS, TransformContext, TransformNotApplicable
from ..tasks import Task, TextTask, for_model
from ..train import accuracy, clone_model
from .backends import RunnerConfig, ray_map
from .spec import AttackSpec

RESULTS = "runs.jsonl"
_STATE: dict = {}  # per-process: model, task, retain, device (set once per worker)


@dataclass
class Target:
    """What the suite attacks: the model, the unauthorized task, the authorized task (its accuracy is
    measured after each transform), the model's recorded locks (re-certified per run) and the device."""

    model: nn.Module
    task: Task
    retain: Task | None = None
    locks: list | None = None  # a model directory's meta["locks"]
    device: str = "cpu"
    text: TextTask | None = None  # the attack task's text before tokenization (the backdoor's prefix trigger)


def _die_with_parent() -> None:
    """In a pool worker: exit when the main process dies, even by kill -9 (no orphans blocked forever)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    try:  # Linux: the kernel sends SIGKILL when the parent exits
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    parent = os.getppid()

    def watch() -> None:  # elsewhere (and as a second guard): poll the parent's pid
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _init(target: Target, worker: bool = False) -> None:
    if worker:
        _die_with_parent()
    torch.set_num_threads(1)
    _STATE.update(model=target.model, task=target.task, retain=target.retain, device=target.device,
                  locks=target.locks, text=target.text)


def _certify(locks: list | None, model: nn.Module) -> dict | None:
    """{"lock: invariant": holds} for the recorded locks on `model` (None without locks)."""
    if not locks:
        return None
    from ..locks.factory import lock_from_meta

    try:
        return {f"{c.lock}: {c.invariant}": bool(c.holds) for c in lock_from_meta(locks).certify(model)}
    except Exception as e:  # a transform can change the architecture a lock measures
        return {"error": f"{type(e).__name__}: {e}"}


def _adapted(model: nn.Module, task: Task | None) -> Task | None:
    return None if task is None else for_model(task, model)


def run_spec(model: nn.Module, task: Task, spec: AttackSpec, retain: Task | None = None, device: str = "cpu",
             locks: list | None = None, text: TextTask | None = None) -> dict:
    """One attack: transforms, fine-tuning, folding back. Returns a JSON-ready row.

    `text`: a text task's texts before tokenization (`task` is their tokens); the backdoor's prefix trigger
    is stamped on them, so a backdoor run on tokens without them is skipped.

    With `locks` (the model's recorded meta["locks"]), plain runs are watched by a LockMonitor
    (the first step at which each certificate broke) and every run's final model is re-certified.
    """
    t0 = time.perf_counter()
    row = {"key": spec.key(), "attack": spec.name, "config": spec.to_dict(), "seed": spec.seed,
           "adaptive": bool(spec.transforms), "insider": spec.insider, "skipped": None, "diverged": None,
           "notes": []}
    tokens = not _adapted(model, task).x_train.is_floating_point()
    if spec.data == "backdoor" and tokens and text is None:
        row.update(skipped="backdoor: the prefix trigger is stamped on text before tokenization; this run was given "
                           "tokens only", wall_s=time.perf_counter() - t0)
        return row  # before any copy, transform or evaluation
    if spec.init == "scratch":
        from ..attacks.scratch import reinitialized

        m, locks = reinitialized(model, spec.seed), None  # the baseline: no released weight, no lock to watch
    elif spec.init == "distill":
        from ..attacks.distill import DistillConfig, distill

        m, info = distill(model, DistillConfig(steps=spec.distill_steps, batch_size=spec.batch_size, seed=spec.seed),
                          task, device)
        row["distill"], locks = info, None
    else:
        m = clone_model(model)
    retain = _adapted(m, retain)
    # inputs for the transforms that measure activations (temperature-reset's logit scale, function checks):
    # the authorized task's when the red team knows it, else the attacker's own (what a real attacker has)
    sample = (retain if retain is not None else _adapted(m, task)).x_train[:256]
    ctx = TransformContext(sample=sample,
                           lock_meta=getattr(model, "trainlock_lock", None), seed=spec.seed)
    folds = []
    for name, opts in spec.transforms:
        try:
            out = TRANSFORMS.get(name)(**opts)(m, ctx)
        except TransformNotApplicable as e:
            row.update(skipped=f"{name}: {e}", wall_s=time.perf_counter() - t0)
            return row
        m = out.model
        folds.append(out.fold)
        row["notes"].append(f"{name}: {out.note}" if out.note else name)
    if retain is not None and spec.init != "scratch":
        row["authorized_after_transform"] = accuracy(m, retain.x_test, retain.y_test)
    train_task = task
    if spec.data == "backdoor":
        from ..attacks.backdoor import BackdoorConfig, backdoor_metrics, poison

        bd = BackdoorConfig(seed=spec.seed, poison_fraction=spec.poison_fraction,
                            trigger="prefix" if tokens else "patch")
        clean = text if tokens else _adapted(m, task)
        train_task = _adapted(m, poison(clean, bd))
        row["backdoor_before"] = backdoor_metrics(m, clean, bd)
    monitor = None
    if locks and not spec.transforms:
        from ..certify.monitor import LockMonitor
        from ..locks.factory import lock_from_meta

        monitor = LockMonitor(lock_from_meta(locks), every=spec.eval_every)
    res = finetune(m, spec.finetune_config(device), train_task, progress=False, monitor=monitor)
    trained = res.model
    for fold in reversed(folds):
        trained = fold(trained) if fold is not None else trained
    final_task = _adapted(trained, task)
    row.update(
        accuracy=accuracy(trained, final_task.x_test, final_task.y_test), accuracy_before_fold=res.accuracy,
        curve=res.curve, evals=[list(e) for e in res.evals], steps_to_target=res.steps_to_target,
        steps=res.steps, diverged=res.diverged, wall_s=time.perf_counter() - t0,
        cost_steps=res.steps + (row["distill"]["steps"] if "distill" in row else 0),
    )
    if retain is not None:
        row["authorized_after_attack"] = accuracy(trained, retain.x_test, retain.y_test)
    if locks:
        row["lock_first_broken"] = res.monitor_first_broken
        row["certificates_after"] = _certify(locks, trained)
    if spec.data == "backdoor":
        row["backdoor_after"] = backdoor_metrics(trained, clean if tokens else final_task, bd)  # accuracy, F1, ASR
    return row


def _worker(spec_dict: dict) -> dict:
    spec = AttackSpec.from_dict(spec_dict)
    try:
        return run_spec(_STATE["model"], _STATE["task"], spec, _STATE["retain"], _STATE.get("device", "cpu"),
                        _STATE.get("locks"), _STATE.get("text"))
    except Exception as e:  # a crashing attack is a result to report, not a reason to stop the sweep
        return {"key": spec.key(), "attack": spec.name, "config": spec.to_dict(), "seed": spec.seed,
                "adaptive": bool(spec.transforms), "skipped": None, "diverged": None,
                "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=3)}


def read_rows(path: Path) -> list[dict]:
    """Rows already in a results file (a torn last line from a killed run is ignored)."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and kill the workers (their runs are lost; finished rows are on disk)."""
    procs = list(getattr(pool, "_processes", {}).values())  # the executor has no public terminate
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.kill()
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(timeout=5)


def run_suite(
    target: Target,
    specs: Iterable[AttackSpec],
    out: Path | None = None,
    workers: RunnerConfig | int = 2,
    progress: bool = True,
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Run every spec not already in `out/runs.jsonl` against `target`; returns all rows (old and new) in
    spec order. `workers`: a local pool size, or a RunnerConfig (backend and workers). Local runs on CUDA (or
    with workers <= 0, or a single run) go one at a time in this process."""
    runner = workers if isinstance(workers, RunnerConfig) else RunnerConfig(workers=workers)
    workers = runner.workers
    specs = list(specs)
    path = Path(out) / RESULTS if out is not None else None
    done = {r["key"]: r for r in read_rows(path)} if path else {}
    todo = [s for s in specs if s.key() not in done]
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(todo), desc="red team", disable=None if progress else True)

    def keep(row: dict) -> None:
        done[row["key"]] = row
        if path:
            with open(path, "a+b") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() > 0:  # a torn last line (a killed run) must not swallow this row
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        f.write(b"\n")
                f.write((json.dumps(row, sort_keys=True) + "\n").encode())
                f.flush()
                os.fsync(f.fileno())
        if on_row:
            on_row(row)
        bar.update(1)
        bar.set_postfix_str(f"{row['attack']}: {row.get('accuracy', row.get('skipped') or row.get('error'))}")

    try:
        if runner.backend == "ray" and todo:
            ray_map(target, todo, runner, keep)
        elif workers <= 0 or len(todo) <= 1 or target.device != "cpu":
            threads = torch.get_num_threads()
            _init(target)
            try:
                for s in todo:
                    keep(_worker(s.to_dict()))
            finally:
                torch.set_num_threads(threads)
        else:
            # fork where the platform has it (as DataLoader workers do; no __main__ guard needed in
            # user scripts); spawn elsewhere
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(target, True))
            try:
                futures = [pool.submit(_worker, s.to_dict()) for s in todo]
                for fut in as_completed(futures):
                    keep(fut.result())
            except BaseException:  # Ctrl-C (or any error): stop now, keep the finished rows, leave no process
                _stop(pool)
                raise
            pool.shutdown(wait=True)
    finally:
        bar.close()
    return [done[s.key()] for s in specs if s.key() in done]
