"""The honest lock table: every lock through the same red team, beside the unlocked base and the references.

Per lock: authorized utility (vs the base's), cost to lock (wall time and peak memory), and per held-back attack task the red
team's worst case (best blind accuracy from the locked weights), the best reference attacker of any row (the matched
runs from scratch and the classical reference: always available to an attacker), the uplift (worst - reference),
and the cost to bypass: the fewest optimizer steps any run on the locked weights needed to come within
`bypass_margin` of the unlocked base's best (None when no run did). Rows are sorted worst case first:
largest uplift first. Tables written before references existed are read with their scratch as the reference. Everything goes into out/ (one red-team directory per lock and task, resumable) and
out/table.json; `format_table` prints it.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..api import lock
from ..atomic import write_text
from ..config import check_float, check_int, option, to_dict
from ..io.artifacts import load, save
from ..io.tables import markdown_table
from ..red_team import RedTeamConfig, RunnerConfig, redteam
from ..tasks import Task, for_model
from ..train import LoopConfig, evaluate

logger = logging.getLogger(__name__)


@dataclass
class TableConfig:
    budget: int = option(14, "red-team runs per lock and task (the staged suite's first runs)")
    steps: int = option(200, "optimizer steps per red-team run")
    batch_size: int = option(64, "red-team minibatch size")
    bypass_margin: float = option(0.02, "bypassed = within this of the unlocked base's best accuracy")
    runner: RunnerConfig = option(factory=RunnerConfig, help="where the red-team runs execute", flat=True)
    optimizers: tuple[str, ...] = option(
        factory=tuple, help="only these optimizers in the red-team subset (default: every registered one)"
    )
    transforms: tuple[str, ...] = option(
        factory=tuple, help="only these weight-space transforms in the adaptive stage (default: every registered one)"
    )
    lrs: tuple[float, ...] = option(
        factory=tuple,
        help="one learning-rate grid for every optimizer (default: a grid "
        "per optimizer; pretrained transformers want e.g. 1e-5 1e-4 1e-3)",
    )
    seeds: tuple[int, ...] = option(
        (0,),
        "red-team seeds, one or more (e.g. 0 1 2): each lock and task is attacked once per seed; the worst case is "
        "the best attack of any seed, the reference the best of any seed, and the table shows the uplift's "
        "min..max over seeds",
    )
    device: str = option("cpu", "cpu or cuda")

    def __post_init__(self):
        for name in ("budget", "steps", "batch_size"):
            check_int("table", name, getattr(self, name), 1)
        check_float("table", "bypass_margin", self.bypass_margin, 0.0, 1.0)
        for lr in self.lrs:
            check_float("table", "lrs", lr, 0.0, open_low=True)
        for seed in self.seeds:
            check_int("table", "seeds", seed, 0)
        if len(set(self.seeds)) != len(self.seeds) or not self.seeds:
            raise ValueError(f"table: seeds must be one or more distinct integers, got {list(self.seeds)}")


def _over_seeds(res: dict) -> dict:
    """A red-team result over its seeds: the best locked accuracy and best reference of any seed (the attacker
    picks their best run), the attack that reached it, and the per-seed uplift's min / median / max."""
    rows = [s for b in res.get("budgets") or [] for s in b["seeds"]]
    locked = [s["locked"] for s in rows if s["locked"] is not None]
    refs = [s["reference"]["accuracy"] for s in rows if s["reference"]["accuracy"] is not None]
    best = max(rows, key=lambda s: -1 if s["locked"] is None else s["locked"], default=None)
    ups = sorted(s["uplift"] for s in rows if s["uplift"] is not None)
    return {
        "worst": max(locked) if locked else None,
        "reference": max(refs) if refs else None,
        "seeds": [s["seed"] for s in rows],
        "best_seed": None if best is None else best["seed"],
        "uplift_seeds": {"min": ups[0], "median": ups[len(ups) // 2], "max": ups[-1]} if ups else None,
    }


@contextmanager
def peak_memory(device: str):
    """Yields a dict whose "mb" is set, when the block ends, to the block's peak memory in MB: the CUDA
    allocator's peak on a GPU, else this process's peak resident set (Linux: VmHWM, reset when the block starts;
    it includes what was resident before, such as the base model). None where neither can be read."""
    box: dict = {"mb": None}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        yield box
        box["mb"] = torch.cuda.max_memory_allocated() / 2**20
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
    except OSError:
        yield box
        return
    yield box
    with open("/proc/self/status") as f:
        box["mb"] = next((float(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:")), None)


def _bypass_steps(rows: list[dict], level: float) -> int | None:
    """The fewest steps at which any released-weights run's accuracy checks reached `level`."""
    best = None
    for r in rows:
        config = r.get("config", {})
        if config.get("start", config.get("init", "released")) != "released" or r.get("insider"):
            continue
        extra = r["distill"]["steps"] if r.get("distill") else 0
        hit = next((s for s, a in r.get("evals") or [] if a is not None and a >= level), None)
        if hit is None and r.get("accuracy") is not None and r["accuracy"] >= level and r.get("steps"):
            hit = r["steps"]  # reached only at the end, after the last periodic evaluation
        if hit is not None and (best is None or hit + extra < best):
            best = hit + extra
    return best


def lock_table(
    base: nn.Module,
    retain: Task,
    attacks: list[Task],
    locks: dict[str, object],
    out: str | Path,
    cfg: TableConfig | None = None,
    progress: bool = False,
) -> dict:
    """Lock `base` with each of `locks` ({row name: lock spec for `trainlock.lock`, or None for the base itself}),
    red-team each on every task of `attacks`; returns {"rows", "base", "config"} and writes out/table.json."""
    cfg = cfg or TableConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    retain = for_model(retain, base)
    base_utility = evaluate(base, retain)
    rt_cfg = RedTeamConfig(
        loop=LoopConfig(device=cfg.device, max_steps=cfg.steps, batch_size=cfg.batch_size, epochs=10**6),
        budget=cfg.budget,
        runner=cfg.runner,
        optimizers=tuple(cfg.optimizers),
        transforms=tuple(cfg.transforms),
        lrs=tuple(cfg.lrs),
        seeds=tuple(cfg.seeds),
    )
    base_best = {}
    for task in attacks:
        res = redteam(base, task, rt_cfg, out=out / "none" / task.name)
        base_best[task.name] = _over_seeds(res)["worst"]
    rows = []
    for name, spec in locks.items():
        d = out / name
        if spec is None:  # the unlocked base as a row of its own
            model, lock_s, lock_mb = base, 0.0, None
        elif (d / "model" / "trainlock.json").is_file():
            model, meta = load(d / "model")
            lock_s, lock_mb = meta.get("lock_wall_s"), meta.get("lock_peak_mb")
        else:
            t0 = time.perf_counter()
            with peak_memory(cfg.device) as peak:
                res = lock(base, spec, retain=retain, progress=progress)
            lock_s, lock_mb = time.perf_counter() - t0, peak["mb"]
            save(
                res.model,
                d / "model",
                {"task": retain.name, "lock_wall_s": lock_s, "lock_peak_mb": lock_mb, **res.record},
            )
            model, _ = load(d / "model")  # what is released: no training-time hooks, no requires_grad flags
        row = {
            "lock": name,
            "spec": json.loads(json.dumps(spec, default=lambda o: to_dict(o))),
            "utility": evaluate(model, retain),
            "base_utility": base_utility,
            "lock_s": lock_s,
            "lock_peak_mb": lock_mb,
            "tasks": {},
        }
        for task in attacks:
            res = redteam(model, task, rt_cfg, out=d / task.name)
            worst, scratch, seeds = res["locked"], res["scratch"], _over_seeds(res)
            level = None if base_best[task.name] is None else base_best[task.name] - cfg.bypass_margin
            row["tasks"][task.name] = {
                "worst": seeds["worst"],
                "worst_attack": worst and worst["attack"],
                "scratch": scratch and scratch["accuracy"],
                "reference": seeds["reference"],
                "reference_attacker": res["reference"]["attacker"],
                "uplift": res["uplift"],
                "seeds": seeds["seeds"],
                "uplift_seeds": seeds["uplift_seeds"],
                "base_best": base_best[task.name],
                "bypass_steps": None if level is None else _bypass_steps(res["runs"], level),
            }
        rows.append(row)
        logger.info("lock table: %s done", name)
    result = rescore(
        {
            "rows": rows,
            "base_utility": base_utility,
            "base_best": base_best,
            "retain_task": retain.name,
            "attack_tasks": [t.name for t in attacks],
            "config": to_dict(cfg),
        }
    )
    write_text(out / "table.json", json.dumps(result, indent=2, default=str))
    return result


def _own_reference(c: dict) -> float | None:
    """A row's own best reference on a task (tables written before references existed: its best scratch run)."""
    if "reference_own" in c:
        return c["reference_own"]
    return c.get("reference", c.get("scratch_own", c.get("scratch")))


def rescore(result: dict) -> dict:
    """One reference per task for the whole table: the best reference run of any row (an attacker can always use
    any setting any row's red team tried; a row's own scratch runs depend on the learning rates its probes
    picked). Sets each task's `reference` and `uplift` from it, keeps the row's own as `reference_own`, and sorts
    rows worst case (largest uplift) first. Idempotent."""
    for t in result["attack_tasks"]:
        own = [_own_reference(r["tasks"][t]) for r in result["rows"]]
        best = max((v for v in own if v is not None), default=None)
        result.setdefault("reference_best", {})[t] = best
        for r, v in zip(result["rows"], own, strict=True):
            c = r["tasks"][t]
            c.pop("advantage", None)  # tables written before references existed
            c["reference_own"], c["reference"] = v, best
            c["uplift"] = None if c["worst"] is None or best is None else c["worst"] - best
    for r in result["rows"]:
        r.pop("max_advantage", None)
        ups = [c["uplift"] for c in r["tasks"].values() if c["uplift"] is not None]
        r["max_uplift"] = max(ups) if ups else None
    result.pop("scratch_best", None)
    result["rows"].sort(key=lambda r: -(r["max_uplift"] if r["max_uplift"] is not None else -1))
    return result


def format_table(result: dict) -> str:
    """The table as markdown: one row per lock, worst case (largest uplift over the best reference) first."""
    result = rescore(result)
    tasks = result["attack_tasks"]
    head = ["lock", "utility (base)", "lock s", "lock peak MB"] + [f"{t}: worst / uplift / bypass steps" for t in tasks]
    f = lambda v: "-" if v is None else f"{v:.3f}"
    rows = []
    for r in result["rows"]:
        cells = [
            r["lock"],
            f"{r['utility']:.4f} ({result['base_utility']:.4f})",
            "-" if r["lock_s"] is None else f"{r['lock_s']:.0f}",
            "-" if r.get("lock_peak_mb") is None else f"{r['lock_peak_mb']:.0f}",
        ]
        for t in tasks:
            c = r["tasks"][t]
            adv = "-" if c["uplift"] is None else f"{c['uplift']:+.3f}"
            spread = c.get("uplift_seeds")
            if spread and len(c.get("seeds") or ()) > 1:  # each seed's own uplift (over its own reference)
                adv += f" (seeds {spread['min']:+.3f}..{spread['max']:+.3f})"
            cells.append(
                f"{f(c['worst'])} / {adv} / {'not bypassed' if c['bypass_steps'] is None else c['bypass_steps']}"
            )
        rows.append(cells)
    ref = ", ".join(f"{t} {f(result['reference_best'][t])}" for t in tasks)
    return markdown_table(head, rows) + (
        f"\n\nuplift = worst - the best reference attacker of any row ({ref}); lock peak MB: "
        f"the process's peak while locking (CPU: resident set, base model included; "
        f"GPU: allocated)\n"
    )
