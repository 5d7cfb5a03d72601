"""Where red-team runs execute: this machine's process pool (`local`, the default) or a Ray cluster (`ray`).

Both hand each run to `_worker` (one torch thread per run, a fixed seed), so a run's row is the same
whatever the backend and worker count, and both return rows to the driver as runs finish: the driver
alone writes runs.jsonl, so resuming works the same on either.

Ray: `RunnerConfig(backend="ray")` starts a local Ray instance with `workers` CPUs when no address is given, or joins
an existing cluster (`address="auto"` or "HOST:6379"); each run is one Ray task with `cpus_per_run` CPUs
and `gpus_per_run` GPUs; at most `workers` runs are in flight (0: as many as the cluster schedules). A
run whose worker process dies is retried once by Ray (`max_retries=1`), then recorded as failed with the
reason; an exception inside a run is a row with its error, as in the pool.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from ..config import check_float, check_int, option

logger = logging.getLogger(__name__)

BACKENDS = ("local", "ray")


MAX_PER_RUN = 1024  # CPUs or GPUs one run may reserve: more is a typo, which Ray would reject after the start-up


@dataclass
class RunnerConfig:
    """Where and how many runs execute at once."""

    backend: str = option(
        "local",
        "local: this machine's process pool; ray: Ray tasks (a local Ray instance, or the cluster at --address)",
        choices=lambda: BACKENDS,
    )
    workers: int = option(
        2,
        "runs at the same time (local: pool size, 0 = in this process, at most twice the CPU count; ray: runs in "
        "flight, 0 = as many as the cluster schedules). Each local worker is a process holding its own copy of "
        "the model, the optimizer state and the task: measured peak resident memory per worker about 1.0 GB for "
        "the MNIST CNN, 1.9 GB for MiniLM-L6 (batch 16, 128 tokens), 2.2 GB for EfficientNet-Lite0 (96 px, "
        "batch 32), beside the parent's 1.2 GB (notes/speed.md); choose --workers so that fits in memory. The "
        "reference attackers train in one more single-threaded process beside the suite when it leaves a core "
        "idle (fewer workers, or in-process threads, than cores), else beside the base's runs (--base)",
    )
    address: str | None = option(
        None, "ray: an existing cluster ('auto' or HOST:PORT; default: start a local Ray instance with --workers CPUs)"
    )
    cpus_per_run: float = option(1.0, "ray: CPUs each run reserves")
    gpus_per_run: float = option(0.0, "ray: GPUs each run reserves (1 to give every run its own GPU)")

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        check_int("runner", "workers", self.workers, 0)
        cap = max_local_workers()
        if self.backend == "local" and self.workers > cap:  # each worker is a process holding the model and data
            raise ValueError(
                f"runner: workers {self.workers} is more than twice this machine's {os.cpu_count() or 1} CPUs "
                f"(at most {cap} with the local backend; more only with --backend ray)"
            )
        check_float("runner", "cpus_per_run", self.cpus_per_run, 0.0, MAX_PER_RUN, open_low=True)  # Ray needs > 0
        check_float("runner", "gpus_per_run", self.gpus_per_run, 0.0, MAX_PER_RUN)


def max_local_workers() -> int:
    """The most workers the local backend accepts: twice the machine's CPU count (more only oversubscribe it and
    multiply the memory: each worker holds a copy of the model and the data)."""
    return 2 * (os.cpu_count() or 1)


def _ray():
    try:
        import ray
    except ImportError:
        raise ImportError("the ray backend needs Ray: pip install 'trainlock[cluster]'") from None
    return ray


_LOADED: dict = {}  # in a Ray worker process: the target it fetched last, by its object reference


def _ray_run(boxed: list, spec) -> dict:
    """One run inside a Ray worker process: the pool worker's code, with the same one-thread setting. The target
    comes boxed (`[ObjectRef]`, which Ray does not resolve), so a worker process fetches and unpickles the model
    and data once for all the runs of a sweep it gets, as a pool worker does, not once per run."""
    from .runner import _init, _worker

    ref = boxed[0]
    key = ref.hex()
    if _LOADED.get("key") != key:
        _LOADED.clear()  # another sweep's target: let it go first
        _LOADED.update(key=key, target=_ray().get(ref))
    _init(_LOADED["target"])
    return _worker(spec)


def ray_map(target, todo: list, runner: RunnerConfig, keep: Callable[[dict], None]) -> None:
    """Run every spec of `todo` as a Ray task; `keep(row)` on the driver as each finishes (failures included)."""
    from .row import RunRow

    ray = _ray()
    if not ray.is_initialized():
        kw = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if runner.address:
            ray.init(address=runner.address, **kw)
        else:
            ray.init(num_cpus=max(1, runner.workers), num_gpus=None if runner.gpus_per_run else 0, **kw)
    remote = ray.remote(num_cpus=runner.cpus_per_run, num_gpus=runner.gpus_per_run, max_retries=1)(_ray_run)
    ref = ray.put(target)  # the model and data go to the object store once, not once per run
    queue = list(todo)
    cap = runner.workers or len(queue)
    pending: dict = {}
    try:
        while queue or pending:
            while queue and len(pending) < cap:
                spec = queue.pop(0)
                pending[remote.remote([ref], spec)] = spec  # boxed: see _ray_run
            ready, _ = ray.wait(list(pending), num_returns=1)
            for r in ready:
                spec = pending.pop(r)
                try:
                    row = ray.get(r)
                except ray.exceptions.RayError as e:  # the worker died twice (or the task was lost)
                    logger.warning("run %s failed on Ray: %s", spec.name, e)
                    error = f"ray worker failed after one retry: {type(e).__name__}: {str(e)[:500]}"
                    row = RunRow.failure(spec, error).to_dict()
                keep(row)
    except BaseException:  # Ctrl-C: cancel what is still queued or running; finished rows are already kept
        for r in pending:
            with contextlib.suppress(Exception):  # best effort on the way out
                ray.cancel(r, force=True)
        raise
