"""The red team: a suite of attacks against one model, its worst case first.

    result = tl.redteam(locked, tl.tasks.get("fashion-mnist"), budget=20, out="runs/redteam")
    result["worst"]   # {"attack", "config", "accuracy", "steps_to_target", ...}
    result["runs"]    # one row per run
"""

from __future__ import annotations

import json
from pathlib import Path

import torch.nn as nn

from ..tasks import Task
from .report import adaptive_vs_plain, ranked, worst_case, write_report
from .runner import read_rows, run_spec, run_suite
from .spec import AttackSpec, RedTeamConfig
from .suite import LR_GRID, build_suite


def redteam(
    model: nn.Module,
    task: Task,
    budget: int | None = None,
    out: str | Path | None = None,
    config: RedTeamConfig | None = None,
    retain: Task | None = None,
    base: nn.Module | None = None,
    progress: bool = False,
    locks: list | None = None,
) -> dict:
    """Run the suite against `model` on the unauthorized `task`; returns {"worst", "runs", ...}.

    `retain` (the authorized task) adds its accuracy after each transform; `base` runs the same
    suite on the unlocked model for comparison; `locks` (a model directory's meta["locks"]) adds,
    per run, the step at which each certificate first broke and the certificates after. With `out`, rows go to out/runs.jsonl (resumable)
    and report.md / lr_sweep.png are written there.
    """
    cfg = config or RedTeamConfig()
    if budget is not None:
        cfg.budget = budget
    specs = build_suite(cfg)
    out = Path(out) if out is not None else None
    rows = run_suite(model, task, specs, out, retain, cfg.workers, progress, device=cfg.device, locks=locks)
    if cfg.search_trials:
        from .search import search

        rows += search(model, task, cfg, out, retain, progress)
    base_rows = None
    if base is not None:
        base_rows = run_suite(base, task, specs, None if out is None else out / "base", retain, cfg.workers, progress,
                              device=cfg.device)
    result = {"worst": worst_case(rows), "comparison": adaptive_vs_plain(rows), "runs": rows}
    if base_rows is not None:
        result["base_worst"] = worst_case(base_rows)
    if out is not None:
        write_report(out, f"{getattr(task, 'name', 'task')}", rows, base_rows)
        (out / "summary.json").write_text(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    return result


__all__ = ["AttackSpec", "LR_GRID", "RedTeamConfig", "adaptive_vs_plain", "build_suite", "ranked", "read_rows",
           "redteam", "run_spec", "run_suite", "worst_case", "write_report"]
