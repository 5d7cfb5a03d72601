"""The red team: a suite of attacks against one model, its worst case first.

    result = tl.redteam(locked, tl.tasks.get("fashion-mnist"), tl.RedTeamConfig(budget=20), out="runs/redteam")
    result["worst"]   # {"attack", "config", "accuracy", "steps_to_target", ...}
    result["runs"]    # one row per run
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import torch.nn as nn

from ..tasks import Task
from .report import adaptive_vs_plain, ranked, worst_case, write_report
from .runner import Target, read_rows, run_spec, run_suite
from .spec import AttackSpec, RedTeamConfig
from .suite import LR_GRID, build_suite


def redteam(
    model: nn.Module,
    task: Task,
    config: RedTeamConfig | None = None,
    out: str | Path | None = None,
    retain: Task | None = None,
    base: nn.Module | None = None,
    locks: list | None = None,
    progress: bool = False,
) -> dict:
    """Run the suite against `model` on the unauthorized `task`; returns {"worst", "runs", ...}.

    `config` sets the suite and its budget; `retain` (the authorized task) adds its accuracy after
    each transform; `base` runs the same suite on the unlocked model for comparison; `locks` (a model
    directory's meta["locks"]) adds, per run, the step at which each certificate first broke and the
    certificates after. With `out`, rows go to out/runs.jsonl (resumable) and report.md /
    lr_sweep.png are written there.
    """
    cfg = config or RedTeamConfig()
    specs = build_suite(cfg)
    out = Path(out) if out is not None else None
    device = cfg.loop.device
    rows = run_suite(Target(model, task, retain, locks, device), specs, out, cfg.workers, progress)
    if cfg.search_trials:
        from .search import search

        rows += search(model, task, cfg, out, retain, progress)
    base_rows = None
    if base is not None:
        base_rows = run_suite(Target(base, task, retain, None, device), specs, None if out is None else out / "base",
                              cfg.workers, progress)
    result = {"worst": worst_case(rows), "comparison": adaptive_vs_plain(rows), "runs": rows}
    if base_rows is not None:
        result["base_worst"] = worst_case(base_rows)
    if out is not None:
        write_report(out, f"{getattr(task, 'name', 'task')}", rows, base_rows)
        (out / "summary.json").write_text(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    return result


class _CallableModule(types.ModuleType):
    """`trainlock.redteam` names both this package and its main function; importing the package sets
    the attribute to the module, so the module calls the function: `tl.redteam(model, task)` works."""

    def __call__(self, *args, **kwargs) -> dict:
        return redteam(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["AttackSpec", "LR_GRID", "RedTeamConfig", "adaptive_vs_plain", "build_suite", "ranked", "read_rows",
           "redteam", "run_spec", "run_suite", "Target", "worst_case", "write_report"]
