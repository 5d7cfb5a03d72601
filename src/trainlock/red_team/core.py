"""The red team's entry point: the suite against one model, planned in stages, worst case first.

    result = redteam(locked, tasks.get("fashion-mnist"), RedTeamConfig(budget=20), out="runs/redteam")
    result["worst"]   # {"attack", "config", "accuracy", "steps_to_target", ...}
    result["runs"]    # one row per run (RunRow.to_dict())

Also here: a results directory's identity (`identity`, `claim`): rows are resumed only for the model and task
they are about, and (`binding`) only under the config they were run with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
from pathlib import Path

import torch
import torch.nn as nn

from ..atomic import write_text
from ..attacks.references import ReferenceTarget
from ..io.hashing import tensor_sha256
from ..plotting import trials_to_break
from ..tasks import Task, TextTask, as_task, for_model
from . import binding
from .binding import IDENTITY  # noqa: F401  (the identity file's name, as before)
from .report import (
    TRIALS_PNG,
    adaptive_vs_plain,
    headline,
    spread,
    trials_curve,
    worst_case,
    write_budgets_report,
    write_report,
)
from .runner import Target, beside, run_suite
from .spec import RedTeamConfig
from .suite import STAGES, matched, plan
from .uplift import budget_of, reference_runs, uplift_summary

logger = logging.getLogger(__name__)


def identity(model: nn.Module, task: Task, retain: Task | None = None) -> dict:
    """What a results directory's rows are about: the model's weights, the task's data, the retain task."""
    from ..io.hashing import state_hashes

    return {
        "model_state_sha256": state_hashes(model)["state"],
        "task": task.name,
        "task_sha256": tensor_sha256(task.x_train, task.y_train, task.x_test, task.y_test, legacy=True),
        "retain": None if retain is None else retain.name,
    }


def claim(out: Path, ident: dict) -> None:
    """Resume `out` only when its rows are about the same model and task; else refuse, naming the difference.
    (`redteam` also binds the config: see `binding`.)"""
    binding.identity_diff(Path(out), ident)
    binding.write(Path(out), ident, None)


def redteam(
    model: nn.Module,
    task: Task | str,
    config: RedTeamConfig | None = None,
    out: str | Path | None = None,
    retain: Task | str | None = None,
    base: nn.Module | None = None,
    meta: dict | None = None,
    progress: bool = False,
) -> dict:
    """Run the suite against `model` on the unauthorized `task`; returns {"worst", "runs", ...}.

    `config` sets the suite and its budget; `retain` (the authorized task) adds its accuracy after
    each transform; `base` runs the same suite on the unlocked model for comparison; `meta` (the model
    directory's metadata, as `load` returns it) gives the recorded locks, meta["locks"] (per run: the step
    at which each certificate first broke and the certificates after), and the lock summary, meta["lock"]
    (what the insider sv-clip reads). With `out`, rows go to out/runs.jsonl (resumable) and report.md /
    lr_sweep.png / trials_to_break.png are written there.

    With several step budgets or seeds (`config.steps`, `config.seeds`), the suite runs once per (budget, seed)
    in out/steps-N/seed-S; the result's headline fields are those of the worst case for the defender (the pair
    with the largest uplift, named in "worst_case_at"), "budgets" has one entry per step budget (every seed's row,
    min / median / max of each number), and report.md leads with one row per budget.
    """
    source = as_task(task)
    text = source if isinstance(source, TextTask) else None  # for the backdoor's prefix trigger
    task = for_model(source, model)  # text is tokenized once here, not once per run
    retain = None if retain is None else for_model(as_task(retain, "retain"), model)
    cfg = config or RedTeamConfig()
    if cfg.storage is not None:  # a bad URL fails here, not after the whole suite ran
        from .search import check_storage

        check_storage(cfg.storage)
    pairs = budget_pairs(cfg, len(task.y_train))
    for c in {p[2].loop.max_steps: p[2] for p in pairs}.values():
        if not plan(c, [], c.loop.total_steps(len(task.y_train))):
            raise ValueError(
                f"the suite is empty: no attack matches include={list(cfg.include)} among the registered "
                f"optimizers and transforms (see `trainlock redteam --help`)"
            )
    out = Path(out) if out is not None else None
    title = f"{getattr(task, 'name', 'task')}"
    if len(pairs) == 1:  # one step budget, one seed: the results directory as it always was
        if out is not None:
            _bind(out, model, base, task, retain, [(out, cfg, True)])
        return _redteam_one(model, task, text, retain, pairs[0][2], out, base, meta, progress, title)
    where = {(steps, seed): f"steps-{steps}/seed-{seed}" for steps, seed, _ in pairs}
    if out is not None:  # every directory is checked before any work
        dirs = [(out, cfg, False)] + [(out / where[steps, seed], c, True) for steps, seed, c in pairs]
        _bind(out, model, base, task, retain, dirs)
    results = {}
    for steps, seed, pair_cfg in pairs:
        logger.info("red team at %d steps per run, seed %d", steps, seed)
        sub = None if out is None else out / where[steps, seed]
        results[steps, seed] = _redteam_one(
            model, task, text, retain, pair_cfg, sub, base, meta, progress, f"{title}, {steps} steps, seed {seed}"
        )
    return _over_budgets(results, where, out, title)


def budget_pairs(cfg: RedTeamConfig, n_train: int) -> list[tuple[int, int, RedTeamConfig]]:
    """(steps per run, seed, the config of that run) for every step budget and seed of `cfg`, budgets in
    increasing order. A listed step budget N sets the loop's max_steps to N and raises its epochs until N steps
    fit; without `cfg.steps` and `cfg.seeds` the one pair's config is `cfg` itself."""
    if not cfg.steps and not cfg.seeds:
        return [(cfg.loop.total_steps(n_train), cfg.loop.seed, cfg)]
    loops = []
    for n in sorted(cfg.steps) or [None]:
        loop = cfg.loop
        if n is not None:
            epochs = max(loop.epochs, math.ceil(n / loop.steps_per_epoch(n_train)))
            loop = dataclasses.replace(loop, max_steps=n, epochs=epochs)
        loops.append(loop)
    return [
        (loop.total_steps(n_train), seed, dataclasses.replace(cfg, loop=dataclasses.replace(loop, seed=seed)))
        for loop in loops
        for seed in cfg.seeds or (cfg.loop.seed,)
    ]


def _bind(
    out: Path,
    model: nn.Module,
    base: nn.Module | None,
    task: Task,
    retain: Task | None,
    dirs: list[tuple[Path, RedTeamConfig, bool]],
) -> None:
    """Check every results directory of this call (dir, its config, whether it holds a base/ of `base`'s runs)
    against the model, task and config it was made for, then record them (binding.json, identity.json), all
    before the first run: a refusal leaves nothing changed, a killed run leaves its directories bound."""
    ident = identity(model, task, retain)
    base_ident = None if base is None else identity(base, task, retain)
    records, warnings = [], []
    for d, c, has_base in dirs:
        record, notes = binding.check(d, ident, c)
        records.append((d, record, has_base))
        warnings += [n for n in notes if n not in warnings]
        if has_base and base_ident is not None:
            binding.identity_diff(d / "base", base_ident)
    for note in warnings:
        logger.warning("%s: %s", out, note)
    for d, record, has_base in records:
        binding.write(d, ident, record)
        if has_base and base_ident is not None:
            binding.write(d / "base", base_ident, None)


def _spare_core(cfg: RedTeamConfig) -> bool:
    """The local suite leaves a CPU core idle: its runs in this process use fewer torch threads than there are
    cores, or its worker pool (one thread each) has fewer workers than cores."""
    busy = cfg.runner.workers if cfg.runner.workers > 0 else torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return busy < cores


def _redteam_one(
    model: nn.Module,
    task: Task,
    text: TextTask | None,
    retain: Task | None,
    cfg: RedTeamConfig,
    out: Path | None,
    base: nn.Module | None,
    meta: dict | None,
    progress: bool,
    title: str,
) -> dict:
    """The suite at one step budget and seed (cfg.loop's): rows, references, the base, report.md."""
    steps = cfg.loop.total_steps(len(task.y_train))
    device = cfg.loop.device
    meta = meta or {}
    target = Target(model, task, retain, meta.get("locks"), device, text, meta.get("lock"))
    rows: list[dict] = []
    calibration = None
    tried: set[str] = set()  # a run that errored is retried once per call (not again by each later stage)
    ref_target, names = ReferenceTarget(task, model, text, steps, cfg.loop.seed), tuple(cfg.references)
    # the references do not depend on any run: they train in a side process (read back from out/references.json
    # below) beside the suite where it leaves a core idle, else beside the base's runs (a small pool's tail)
    side = out is not None and bool(names) and cfg.runner.backend == "local" and device == "cpu"
    early = side and _spare_core(cfg)
    with beside(reference_runs, ref_target, names, out) if early else contextlib.nullcontext():
        for upto in range(len(STAGES)):  # later stages are planned from the results of earlier ones
            if STAGES[upto] == "adaptive" and base is not None:
                planned = plan(cfg, rows, steps)
                planned = planned[: cfg.budget] if cfg.budget else planned  # a backdoor the budget cuts: no calibration
                calibration = _calibrate(base, text or task, cfg, planned, device)
            specs = [s for st, s in plan(cfg, rows, steps, calibration) if STAGES.index(st) <= upto]
            specs = matched(specs[: cfg.budget]) if cfg.budget else specs  # every attack with its scratch twin
            rows = run_suite(target, specs, out, cfg.runner, progress, tried=tried)
        if cfg.search_trials:
            from .search import search

            rows += search(model, task, cfg, out, retain, progress)
    base_rows = None
    if base is not None:
        base_out = None if out is None else out / "base"
        late = side and not early and cfg.runner.workers > 0
        with beside(reference_runs, ref_target, names, out) if late else contextlib.nullcontext():
            base_rows = run_suite(
                Target(base, task, retain, None, device, text), specs, base_out, cfg.runner, progress
            )  # the same attacks as the locked model got
        if cfg.search_trials:
            from .search import search

            base_rows += search(base, task, cfg, base_out, retain, progress)
    refs = reference_runs(ref_target, names, out)
    head = headline(rows, base_rows)
    result = {
        "worst": worst_case(rows),
        "locked": head["locked"],
        "scratch": head["scratch"],
        "base": head["base"],
        "compute_ratio_vs_base": head["compute_ratio_vs_base"],
        "compute_ratio_vs_scratch": head["compute_ratio_vs_scratch"],
        "comparison": adaptive_vs_plain(rows),
        **uplift_summary(head, rows, refs, budget_of(task, steps)),
        "runs": rows,
    }
    if base_rows is not None:
        result["base_worst"] = worst_case(base_rows)
    if calibration is not None:
        result["backdoor_calibration"] = calibration
    curves = {
        "locked": trials_curve(rows),
        "base": None if base_rows is None else trials_curve(base_rows),
        "reference": result["reference"]["accuracy"],
        "png": None,
    }
    result["budgets"] = [_budget_entry(steps, [_seed_row(result, cfg.loop.seed, ".")])]
    result["trials_to_break"] = curves
    if out is not None:
        panel = {"locked": [curves["locked"]], "base": [curves["base"] or []], "reference": [curves["reference"]]}
        curves["png"] = str(trials_to_break({f"{steps} steps per run": panel}, out / TRIALS_PNG, title))
        write_report(out, title, rows, base_rows, calibration, result)
        write_text(out / "summary.json", json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    return result


def _seed_row(res: dict, seed: int, where: str) -> dict:
    """One (step budget, seed)'s numbers in a `budgets` entry."""

    def acc(x: dict | None) -> float | None:
        return None if x is None else x["accuracy"]

    ref = res["reference"]
    return {
        "seed": seed,
        "worst": acc(res["worst"]),
        "locked": acc(res["locked"]),
        "base": acc(res["base"]),
        "reference": {"accuracy": ref["accuracy"], "attacker": ref["attacker"]},
        "uplift": res["uplift"],
        "base_uplift": res["base_uplift"],
        "dir": where,
    }


def _budget_entry(steps: int, seeds: list[dict]) -> dict:
    """A step budget over its seeds: every seed's row and min / median / max of each number."""
    return {
        "steps": steps,
        "seeds": seeds,
        "uplift": spread([s["uplift"] for s in seeds]),
        "base_uplift": spread([s["base_uplift"] for s in seeds]),
        "locked": spread([s["locked"] for s in seeds]),
        "reference": spread([s["reference"]["accuracy"] for s in seeds]),
    }


def _defender_worst(item: tuple) -> tuple:
    """Rank of a (budget, seed) for the defender: the largest uplift is the worst; unknown uplifts last, then the
    locked accuracy."""
    res = item[1]
    up, locked = res["uplift"], res["locked"]
    return (up is not None, -math.inf if up is None else up, -math.inf if locked is None else locked["accuracy"])


def _over_budgets(results: dict, where: dict, out: Path | None, title: str) -> dict:
    """The result over every (step budget, seed): the worst case for the defender at the top (its fields, as a
    single budget's result, with `worst_case_at` naming its steps and seed), `budgets` with one entry per step
    budget, and the trials-to-break curves (out/trials_to_break.png)."""
    (steps, seed), worst = max(results.items(), key=_defender_worst)  # the first of equals: fewest steps
    budgets = []
    for n in sorted({k[0] for k in results}):
        keys = [k for k in results if k[0] == n]
        budgets.append(_budget_entry(n, [_seed_row(results[k], k[1], where[k]) for k in keys]))
    n_budgets, n_seeds = len(budgets), len({k[1] for k in results})
    result = {
        **worst,
        "budget": {**worst["budget"], "seed": seed},
        "verdict": f"worst case over {n_budgets} step budget(s) x {n_seeds} seed(s), at {steps} steps per run, "
        f"seed {seed}: {worst['verdict']}",
        "worst_case_at": {"steps": steps, "seed": seed, "dir": where[steps, seed]},
        "budgets": budgets,
    }
    panels = {}
    for n in sorted({k[0] for k in results}):
        rs = [results[k]["trials_to_break"] for k in results if k[0] == n]
        panels[f"{n} steps per run"] = {
            "locked": [r["locked"] for r in rs],
            "base": [r["base"] for r in rs if r["base"]],
            "reference": [r["reference"] for r in rs],
        }
    result["trials_to_break"] = {"panels": panels, "png": None}
    if out is not None:
        result["trials_to_break"]["png"] = str(trials_to_break(panels, out / TRIALS_PNG, title))
        write_budgets_report(out, title, result)
        write_text(out / "summary.json", json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    return result


def _calibrate(base: nn.Module, task: Task | TextTask, cfg: RedTeamConfig, planned: list, device: str) -> dict | None:
    """The backdoor setting the unlocked base learns (ASR >= 0.9) within the cheapest budget; None when the
    suite has no backdoor run. A TextTask gets the prefix trigger, a tensor task the patch."""
    from ..attacks.backdoor import BackdoorConfig, calibrate

    spec = next((s for st, s in planned if s.data == "backdoor"), None)
    if spec is None:
        return None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the suite's runs
    try:
        trigger = "prefix" if isinstance(task, TextTask) else "patch"
        return calibrate(base, spec.finetune_config(device), task, BackdoorConfig(trigger=trigger))
    finally:
        torch.set_num_threads(threads)
