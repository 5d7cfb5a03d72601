"""Run attack specs against one model: in a process pool, resumable, one checked JSON row (`RunRow`) per run.

Each run uses one torch thread whatever the pool size, so a run's numbers (and the worst case)
do not depend on the worker count. Rows are appended to `runs.jsonl` as runs finish; a restarted
sweep skips every spec whose key is already there, but for runs that ended in an error: those run again,
and their new row, appended later, wins.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..attacks.stages import AttackState, StageNotApplicable, chain
from ..tasks import Task, TextTask, for_model
from ..train import accuracy
from .backends import RunnerConfig, ray_map
from .row import RunRow, append_row, read_rows
from .spec import AttackSpec

RESULTS = "runs.jsonl"
_STATE: dict = {}  # per-process: the Target (set once per worker)
_FRESH: dict[tuple, dict] = {}  # this process's finished runs from fresh weights (see _fresh_keys)


@dataclass
class Target:
    """What the suite attacks: the model, the unauthorized task, the authorized task (its accuracy is
    measured after each transform), the model's recorded locks (re-certified per run), the device, and the
    model directory's lock summary (what insider transforms read)."""

    model: nn.Module
    task: Task
    retain: Task | None = None
    locks: list | None = None  # a model directory's meta["locks"]
    device: str = "cpu"
    text: TextTask | None = None  # the attack task's text before tokenization (the backdoor's prefix trigger)
    lock_summary: dict | None = None  # a model directory's meta["lock"] (sv-clip's use_record reads it)


def _die_with_parent(parent: int | None = None) -> None:
    """In a pool worker: exit when the main process dies, even by kill -9 (no orphans blocked forever).
    `parent`: the main process's pid, taken before the fork (a parent that died between the fork and this call
    is caught here: the death signal is only armed from now on)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    try:  # Linux: the kernel sends SIGKILL when the parent exits
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if parent is not None and os.getppid() != parent:  # orphaned already, before the signal was armed
        os._exit(1)
    parent = os.getppid()

    def watch() -> None:  # elsewhere (and as a second guard): poll the parent's pid
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _init(target: Target, worker: bool = False, parent: int | None = None) -> None:
    if worker:
        _die_with_parent(parent)
        one_blas_thread()
    torch.set_num_threads(1)
    _STATE["target"] = target


_SIDE: dict = {}  # in a side process (`beside`): the call it makes


def _side_init(parent: int, fn: Callable, args: tuple) -> None:
    _die_with_parent(parent)
    one_blas_thread()
    torch.set_num_threads(1)
    _SIDE["call"] = (fn, args)


def _side_run():
    fn, args = _SIDE["call"]
    return fn(*args)


@contextlib.contextmanager
def beside(fn: Callable, *args):
    """Run ``fn(*args)`` in one forked process (one torch and one BLAS thread) while the caller's block runs; yields
    its Future and waits for it on leaving (re-raising its error). The arguments reach the process by the fork, not
    by pickling (a model and its task data are not copied through a pipe). Where the platform cannot fork, the call
    runs right here, before the block. Ctrl-C or an error in the block kills the process."""
    if "fork" not in mp.get_all_start_methods():
        done: Future = Future()
        done.set_result(fn(*args))
        yield done
        return
    pool = ProcessPoolExecutor(
        1, mp_context=mp.get_context("fork"), initializer=_side_init, initargs=(os.getpid(), fn, args)
    )
    try:
        future = pool.submit(_side_run)
        yield future
        future.result()
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)


def one_blas_thread() -> None:
    """One thread for the BLAS and OpenMP pools of this worker process (scikit-learn's probe and reference fits). A
    worker inherits OMP_NUM_THREADS = the core count, and those pools' threads spin while they wait: two workers'
    fits then fight over two cores (a probe took 107 s in a worker, 37 s alone). The limit covers the libraries
    loaded already (threadpoolctl) and, through the environment, those a run loads later: scipy's OpenBLAS and
    scikit-learn's OpenMP, first imported by a probe inside a worker, started with 2 threads each and made the
    quick demo's probe runs 3x slower (session 17). The threadpoolctl part is a no-op without it (it comes with
    scikit-learn, the only user of those fits)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=1)


def _certify(locks: list | None, model: nn.Module) -> dict | None:
    """{"lock: invariant": holds} for the recorded locks on `model` (None without locks)."""
    if not locks:
        return None
    from ..locks.factory import lock_from_meta

    try:
        return {f"{c.lock}: {c.invariant}": bool(c.holds) for c in lock_from_meta(locks).certify(model)}
    except Exception as e:  # a transform can change the architecture a lock measures
        return {"error": f"{type(e).__name__}: {e}"}


def _score(state: AttackState) -> None:
    """The red team's numbers on the final model: accuracy on the attack task and the authorized one, the
    recorded locks' certificates, then whatever the stages asked for (`state.after`)."""
    row, model = state.row, state.model
    res = state.result
    if not state.scored:  # (a scored row was scored by its train stage: the probe's classifier beside the model)
        if res is not None and res.model is model and state.train_task is state.task:
            row.accuracy = res.accuracy  # trained on the attack task itself, nothing changed since: its final test
        else:
            final = state.adapted(state.task)
            row.accuracy = accuracy(model, final.x_test, final.y_test)
    retain = state.adapted(state.retain)
    if retain is not None and state.scored and not state.folds:  # the transforms' output, measured after them
        row.authorized_after_attack = row.authorized_after_transform
    elif retain is not None:
        row.authorized_after_attack = accuracy(model, retain.x_test, retain.y_test)
    if state.locks:
        row.lock_first_broken = state.result.monitor_first_broken if state.result is not None else None
        row.certificates_after = _certify(state.locks, model)
    for measure in state.after:
        measure(state)


def run_spec(target: Target, spec: AttackSpec) -> RunRow:
    """One attack: the spec's stages (start -> transforms -> data -> train -> fold) on `target`, then the score.

    A stage that does not apply (its `check`, or StageNotApplicable) makes the row `skipped`, with the reason.
    With recorded locks (`target.locks`), plain runs from the released weights are watched by a LockMonitor (the
    first step at which each certificate broke) and every such run's final model is re-certified. Exceptions
    propagate (the runner's workers turn them into error rows)."""
    t0 = time.perf_counter()
    stages = spec.stages()
    state = AttackState(
        released=target.model,
        task=for_model(target.task, target.model),
        spec=spec,
        row=RunRow.of(spec),
        retain=target.retain if getattr(stages.start, "authorized", True) else None,
        text=target.text,
        device=target.device,
        locks=None if stages.start.fresh else target.locks,
        lock_summary=target.lock_summary,
    )
    attack = chain(*stages)
    try:
        reason = attack.check(state)  # before any copy, transform or evaluation
        if reason:
            raise StageNotApplicable(reason)
        attack(state)
        _score(state)
    except StageNotApplicable as e:
        state.row.skipped = str(e)
    state.row.wall_s = time.perf_counter() - t0
    return state.row


def _worker(spec: AttackSpec) -> dict:
    try:
        return run_spec(_STATE["target"], spec).to_dict()
    except Exception as e:  # a crashing attack is a result to report, not a reason to stop the sweep
        return RunRow.failure(spec, f"{type(e).__name__}: {e}", traceback.format_exc(limit=3)).to_dict()


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


def _import_for_workers(specs: list[AttackSpec]) -> None:
    """Import here, before the fork, what the runs would each import in their worker: scikit-learn for the probe
    (1.4 s per worker and per pool on 2 CPU cores, session 17)."""
    if any(s.train == "probe" for s in specs):
        with contextlib.suppress(ImportError):
            import sklearn.linear_model
            import sklearn.model_selection
            import sklearn.pipeline
            import sklearn.preprocessing  # noqa: F401


def _architecture_only(spec: AttackSpec) -> bool:
    """The run starts from fresh weights and reads nothing else of the released model (scratch; a plugin's start
    says so with `reads_released = False`). A distilled student is fresh weights too, but it learns the released
    model's outputs: its run differs from one released model to the next."""
    start = spec.stages().start
    return bool(start.fresh) and not getattr(start, "reads_released", spec.start != "scratch")


def _fresh_keys(target: Target, specs: list[AttackSpec]) -> dict[str, tuple]:
    """{spec key: memo key} for the specs that start from fresh weights and read nothing else of the released model
    (scratch). Such a run does not read the released weights, only what `reinitialized` leaves of them, so it is the
    same run whichever model of one architecture is attacked: the key binds the re-initialized weights themselves
    (their hash, per seed), the module tree, the task's and the retain task's data and the device. A lock table's
    rows and a red team's base then share their scratch twins instead of training them again."""
    from ..io.hashing import state_hashes, tensor_sha256
    from ..train import reinitialized

    fresh = [s for s in specs if _architecture_only(s)]
    if not fresh:
        return {}
    try:
        t = target.task
        data = tensor_sha256(t.x_train, t.y_train, t.x_test, t.y_test)
        r = target.retain
        retain = None if r is None else tensor_sha256(r.x_train, r.y_train, r.x_test, r.y_test)
        seeds = {s.seed for s in fresh}
        weights = {seed: state_hashes(reinitialized(target.model, seed))["state"] for seed in seeds}
    except (ValueError, TypeError, RuntimeError):  # no reset_parameters, or unhashable state: no reuse
        return {}
    tree = hash((type(target.model).__qualname__, repr(target.model)))
    return {s.key(): (s.key(), weights[s.seed], tree, data, retain, target.device) for s in fresh}


def run_suite(
    target: Target,
    specs: Iterable[AttackSpec],
    out: Path | None = None,
    workers: RunnerConfig | int = 2,
    progress: bool = True,
    on_row: Callable[[dict], None] | None = None,
    tried: set[str] | None = None,
) -> list[dict]:
    """Run every spec not already in `out/runs.jsonl` (or there only as an error row: retried, the new row
    appended after the old one) against `target`; returns all rows (old and new) in
    spec order, each in the `RunRow.to_dict()` form (what runs.jsonl holds; the last row of a key wins). `workers`: a local pool size, or a RunnerConfig (backend and workers). Local runs on CUDA (or
    with workers <= 0, or a single run) go one at a time in this process. `tried`: the keys already run by the
    caller's earlier calls (a suite run in stages): their error rows are kept, not retried again; the keys run
    here are added to it."""
    runner = workers if isinstance(workers, RunnerConfig) else RunnerConfig(workers=workers)
    workers = runner.workers
    specs = list(specs)
    path = Path(out) / RESULTS if out is not None else None
    # the last row of a key wins (a rerun appends a retried run's row after its old one); a run that errored is
    # run again, one that was skipped (its stage does not apply) or finished is kept
    done = {r["key"]: r for r in read_rows(path)} if path else {}
    done = {k: r for k, r in done.items() if not r.get("error") or (tried is not None and k in tried)}
    memo = _fresh_keys(target, [s for s in specs if s.key() not in done])
    reused = [s for s in specs if s.key() not in done and _FRESH.get(memo.get(s.key())) is not None]
    skip = {s.key() for s in reused}
    todo = [s for s in specs if s.key() not in done and s.key() not in skip]
    if tried is not None:
        tried.update(s.key() for s in specs)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(todo), desc="red team", disable=None if progress else True)

    def keep(row: dict) -> None:
        row = append_row(path, row) if path else RunRow.from_dict(row).to_dict()  # checked either way
        done[row["key"]] = row
        if row["key"] in memo and not row.get("error"):
            _FRESH[memo[row["key"]]] = row
        if on_row:
            on_row(row)
        bar.update(1)
        bar.set_postfix_str(f"{row['attack']}: {row.get('accuracy', row.get('skipped') or row.get('error'))}")

    for s in reused:  # the same run from fresh weights, already made in this process (no bar step: no work)
        row = _FRESH[memo[s.key()]]
        row = append_row(path, row) if path else row
        done[row["key"]] = row
    try:
        if runner.backend == "ray" and todo:
            ray_map(target, todo, runner, keep)
        elif workers <= 0 or len(todo) <= 1 or target.device != "cpu":
            threads = torch.get_num_threads()
            _init(target)
            try:
                for s in todo:
                    keep(_worker(s))
            finally:
                torch.set_num_threads(threads)
        else:
            # fork where the platform has it (as DataLoader workers do; no __main__ guard needed in
            # user scripts); spawn elsewhere
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            _import_for_workers(todo)
            # no more processes than runs (a fork pool starts all its workers at once)
            pool = ProcessPoolExecutor(
                min(workers, len(todo)), mp_context=ctx, initializer=_init, initargs=(target, True, os.getpid())
            )
            try:
                futures = [pool.submit(_worker, s) for s in todo]
                for fut in as_completed(futures):
                    keep(fut.result())
            except BaseException:  # Ctrl-C (or any error): stop now, keep the finished rows, leave no process
                _stop(pool)
                raise
            pool.shutdown(wait=True)
    finally:
        bar.close()
    return [done[s.key()] for s in specs if s.key() in done]
