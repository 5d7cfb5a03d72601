"""Scale-out, measured side by side in one run on this machine:

1. red-team throughput (runs per minute), the demo CNN on permuted MNIST: the local pool with 1 and 2 workers, and Ray
   with 2 workers (a local Ray instance; its start-up is timed apart from the runs). Goals: Ray >= 0.9x the
   local pool at the same worker count; 2 local workers >= 1.7x one on 2 cores (each run is single-threaded).
2. data-parallel SpecDef lock step time at one global batch: 1 process vs 2 (torchrun, gloo on CPU), with the
   share of each step spent in the gradient all-reduce.

    python benchmarks/bench_scale.py [--runs 8] [--steps 150] [--lock-steps 60] [--model cnn]

Run it on a quiet machine: two busy processes on 2 cores slow torch's threads several-fold.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from goals import report


def throughput(runs: int, steps: int) -> list[tuple[str, float, float]]:
    """[(setting, runs per minute, start-up seconds)] for local x1, local x2, ray x2."""
    import torch

    import trainlock as tl
    from trainlock.red_team import AttackSpec, RunnerConfig, Target, run_suite

    # runs of a few seconds each (the CNN on 4,000 MNIST images): pool and Ray overheads are per run, so runs
    # of a fraction of a second would measure start-up, not throughput
    mnist = tl.tasks.get("mnist").subset(n_train=4000, n_test=1000, seed=0)
    torch.manual_seed(0)
    model = tl.models.build("cnn", input_shape=mnist.input_shape, num_classes=10)
    task = tl.tasks.permuted(mnist, seed=1)
    # distinct specs (lr varies) so no run is a resumed one
    specs = [
        AttackSpec.of("adam", 1e-3 * (1 + i / 10), max_steps=steps, batch_size=32, epochs=10**6) for i in range(runs)
    ]
    out = []
    for name, runner in [
        ("local x1", RunnerConfig(workers=1)),
        ("local x2", RunnerConfig(workers=2)),
        ("ray x2", RunnerConfig(backend="ray", workers=2)),
    ]:
        startup = 0.0
        if runner.backend == "ray":
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False, configure_logging=False)
            run_suite(
                Target(model, task),
                [AttackSpec.of("adam", 9.0, max_steps=1, batch_size=32, epochs=10**6)],
                None,
                runner,
                progress=False,
            )  # workers started and warm (torch imported), as the pool's are after fork
            startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = run_suite(Target(model, task), specs, None, runner, progress=False)
        dt = time.perf_counter() - t0
        assert len(rows) == runs and all("accuracy" in r for r in rows), rows
        out.append((name, runs / dt * 60, startup))
        if runner.backend == "ray":
            ray.shutdown()
    return out


WORKER = r"""
import json, sys, time, torch
import torch.nn.functional as F
import trainlock as tl
from trainlock.locks import find_lockable, spectral_term
from trainlock.train import distributed
distributed.init_from_env()
model_name, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
shape = [1, 28, 28]
model = tl.models.build(model_name, input_shape=shape, num_classes=10)
x, y = torch.rand(batch, *shape), torch.randint(0, 10, (batch,))
lockables = find_lockable(model)
distributed.broadcast_parameters(model)
opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
params = list(model.parameters())
def step():
    xb, yb = distributed.shard(x, y)
    loss = 0.5 * F.cross_entropy(model(xb), yb) - 0.5 * spectral_term(lockables, 1)
    distributed.all_finite(float(loss.detach()), xb.device)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    distributed.average_gradients(params)
    opt.step()
for _ in range(5):
    step()
distributed.COMM.update(seconds=0.0, calls=0)
t0 = time.perf_counter()
for _ in range(steps):
    step()
dt = time.perf_counter() - t0
if distributed.is_main():
    print(json.dumps({"step_ms": dt / steps * 1e3, "comm_share": distributed.COMM["seconds"] / dt}))
distributed.shutdown()
"""


def ddp_steps(model: str, steps: int, batch: int, threads: int) -> dict[int, dict]:
    """{processes: {"step_ms", "comm_share"}} for 1 and 2 processes at global batch `batch`."""
    res = {}
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "ddp_worker.py"
        script.write_text(WORKER)
        for n in (1, 2):
            env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // n))}
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={n}",
                str(script),
                model,
                str(steps),
                str(batch),
            ]
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if p.returncode != 0:
                raise RuntimeError(p.stderr[-2000:])
            res[n] = json.loads(p.stdout.strip().splitlines()[-1])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=8, help="red-team runs per setting")
    ap.add_argument("--steps", type=int, default=150, help="optimizer steps per red-team run")
    ap.add_argument("--lock-steps", type=int, default=60, help="timed SpecDef steps per process count")
    ap.add_argument("--model", default="cnn", help="model for the data-parallel lock step")
    ap.add_argument("--batch-size", type=int, default=256, help="global batch of the lock step")
    args = ap.parse_args()
    threads = os.cpu_count() or 1

    print(
        f"red-team throughput: {args.runs} runs of {args.steps} steps (CNN, permuted MNIST, one torch thread per run)"
    )
    rows = throughput(args.runs, args.steps)
    by = {name: rate for name, rate, _ in rows}
    for name, rate, startup in rows:
        extra = f"  (Ray start-up {startup:.1f} s, not counted)" if startup else ""
        print(f"  {name:<9} {rate:7.1f} runs/min{extra}")
    print(
        f"  ray x2 / local x2 = {by['ray x2'] / by['local x2']:.2f} (goal >= 0.9); "
        f"local x2 / local x1 = {by['local x2'] / by['local x1']:.2f} (goal >= 1.7 on 2 cores)"
    )
    report("red-team runs/min: Ray x2 / local x2", by["ray x2"] / by["local x2"], ">=", 0.9)
    report("red-team runs/min: local x2 / local x1", by["local x2"] / by["local x1"], ">=", 1.7)

    print(
        f"\ndata-parallel SpecDef step ({args.model}, global batch {args.batch_size}, {threads} cores split over "
        f"the processes)"
    )
    d = ddp_steps(args.model, args.lock_steps, args.batch_size, threads)
    for n, r in d.items():
        print(
            f"  {n} process{'es' if n > 1 else '  '}  {r['step_ms']:7.1f} ms/step   all-reduce "
            f"{100 * r['comm_share']:4.1f}% of the step"
        )
    print(f"  speed-up 2 vs 1 = {d[1]['step_ms'] / d[2]['step_ms']:.2f}")


if __name__ == "__main__":
    main()
