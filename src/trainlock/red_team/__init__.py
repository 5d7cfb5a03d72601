"""The red team: a suite of attacks against one model, its worst case first (`core.redteam`).

    result = tl.redteam(locked, tl.tasks.get("fashion-mnist"), tl.RedTeamConfig(budget=20), out="runs/redteam")
    result["worst"]   # {"attack", "config", "accuracy", "steps_to_target", ...}
    result["runs"]    # one row per run (RunRow.to_dict())

An attack is a chain of stages (trainlock.attacks.stages) named by an `AttackSpec`; `run_spec` runs one,
`run_suite` many (resumable), each giving a `RunRow`.
"""

from .backends import RunnerConfig
from .core import claim, identity, redteam
from .report import adaptive_vs_plain, ranked, worst_case, write_report
from .row import RowError, RunRow, read_rows
from .runner import RESULTS, Target, run_spec, run_suite
from .spec import AttackSpec, RedTeamConfig
from .suite import LR_GRID, STAGES, build_suite, plan

__all__ = [
    "LR_GRID",
    "RESULTS",
    "STAGES",
    "AttackSpec",
    "RedTeamConfig",
    "RowError",
    "RunRow",
    "RunnerConfig",
    "Target",
    "adaptive_vs_plain",
    "build_suite",
    "claim",
    "identity",
    "plan",
    "ranked",
    "read_rows",
    "redteam",
    "run_spec",
    "run_suite",
    "worst_case",
    "write_report",
]
