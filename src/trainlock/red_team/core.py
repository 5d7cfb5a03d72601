"""The red team's entry point: the suite against one model, planned in stages, worst case first.

    result = redteam(locked, tasks.get("fashion-mnist"), RedTeamConfig(budget=20), out="runs/redteam")
    result["worst"]   # {"attack", "config", "accuracy", "steps_to_target", ...}
    result["runs"]    # one row per run (RunRow.to_dict())

Also here: a results directory's identity (`identity`, `claim`): rows are resumed only for the model and task
they are about.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from ..atomic import write_text
from ..attacks.references import ReferenceTarget
from ..io.hashing import tensor_sha256
from ..tasks import Task, TextTask, as_task, for_model
from .report import adaptive_vs_plain, headline, worst_case, write_report
from .runner import RESULTS, Target, run_suite
from .spec import RedTeamConfig
from .suite import STAGES, matched, plan
from .uplift import budget_of, reference_runs, uplift_summary

IDENTITY = "identity.json"


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
    """Resume `out` only when its rows are about the same model and task; else refuse, naming the difference."""
    f = Path(out) / IDENTITY
    if f.is_file():
        try:
            old = json.loads(f.read_text())
        except json.JSONDecodeError:
            old = {}
        diff = sorted(k for k in ident if old.get(k) != ident[k])
        if diff:
            raise ValueError(
                f"{out} holds red-team runs of another {' and '.join(diff)}; resuming would report "
                f"their numbers as this model's. Choose another --out (or delete {out} to start over)"
            )
        return
    if (Path(out) / RESULTS).is_file():
        raise ValueError(
            f"{out} holds red-team runs without a record of which model they attacked; choose another "
            f"--out (or delete {out / RESULTS} to start over)"
        )
    write_text(f, json.dumps(ident, indent=2, sort_keys=True))


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
    lr_sweep.png are written there.
    """
    source = as_task(task)
    text = source if isinstance(source, TextTask) else None  # for the backdoor's prefix trigger
    task = for_model(source, model)  # text is tokenized once here, not once per run
    retain = None if retain is None else for_model(as_task(retain, "retain"), model)
    cfg = config or RedTeamConfig()
    steps = cfg.loop.total_steps(len(task.y_train))
    if not plan(cfg, [], steps):
        raise ValueError(
            f"the suite is empty: no attack matches include={list(cfg.include)} among the registered "
            f"optimizers and transforms (see `trainlock redteam --help`)"
        )
    out = Path(out) if out is not None else None
    if out is not None:
        claim(out, identity(model, task, retain))
        if base is not None:
            claim(out / "base", identity(base, task, retain))
    device = cfg.loop.device
    meta = meta or {}
    target = Target(model, task, retain, meta.get("locks"), device, text, meta.get("lock"))
    rows: list[dict] = []
    calibration = None
    for upto in range(len(STAGES)):  # later stages are planned from the results of earlier ones
        if STAGES[upto] == "adaptive" and base is not None:
            calibration = _calibrate(base, text or task, cfg, plan(cfg, rows, steps), device)
        specs = [s for st, s in plan(cfg, rows, steps, calibration) if STAGES.index(st) <= upto]
        specs = matched(specs[: cfg.budget]) if cfg.budget else specs  # every attack with its scratch twin
        rows = run_suite(target, specs, out, cfg.runner, progress)
    if cfg.search_trials:
        from .search import search

        rows += search(model, task, cfg, out, retain, progress)
    refs = reference_runs(ReferenceTarget(task, model, text, steps, cfg.loop.seed), tuple(cfg.references), out)
    base_rows = None
    if base is not None:
        base_out = None if out is None else out / "base"
        base_rows = run_suite(
            Target(base, task, retain, None, device, text), specs, base_out, cfg.runner, progress
        )  # the same attacks as the locked model got
        if cfg.search_trials:
            base_rows += search(base, task, cfg, base_out, retain, progress)
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
    if out is not None:
        write_report(out, f"{getattr(task, 'name', 'task')}", rows, base_rows, calibration, result)
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
