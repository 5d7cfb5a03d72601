"""Head start: does a model give an attacker anything over their best alternative, and at which data budget?

    res = headstart(model, "bbc-news", HeadstartConfig(budgets=(100, 300, 1000)), out="runs/headstart")
    res["budgets"][0]   # {"n", "model": {"accuracy", "attack"}, "reference": {"accuracy", "attacker"}, "uplift"}

For each training-set size n (a seeded subset of the task's training split; the test split is the same for
every n), the model's best attack (fine-tuning at each rate in `lrs`, and the probe, a logistic regression on its
frozen features) stands beside every reference attacker on the same n examples (the same architecture from
scratch at the same optimizers and rates, and the classical models). A lock can only matter where the uplift is
real; run this before locking.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from ..atomic import write_text, writing_file
from ..attacks.references import ReferenceTarget, check_reference
from ..attacks.stages import STAGES
from ..config import check_float, check_int, option
from ..io.tables import markdown_table
from ..tasks import Task, TextTask, as_task, for_model
from .backends import RunnerConfig
from .core import claim, identity
from .report import headline
from .runner import Target, run_suite
from .spec import AttackSpec
from .suite import matched
from .uplift import budget_of, reference_runs, uplift_summary

logger = logging.getLogger(__name__)


@dataclass
class HeadstartConfig:
    """The data budgets and the attacks measured at each."""

    budgets: tuple[int, ...] = option((100, 300, 1000), "training-set sizes n (seeded subsets of the training split)")
    steps: tuple[int, ...] = option(
        (100,),
        "optimizer steps per run, one or more step budgets (e.g. 100 300 1000): the trained references (scratch, "
        "the classical CNN) get the same, so each budget gives its own uplift",
    )
    lrs: tuple[float, ...] = option((1e-4, 1e-3), "learning rates of the fine-tuning runs (and their scratch twins)")
    optimizer: str = option("adamw", "the fine-tuning optimizer")
    batch_size: int = option(16, "minibatch size")
    test_samples: int | None = option(None, "test examples (a seeded subset; default: the whole test split)")
    probe: bool = option(True, "also probe the frozen features (logistic regression), the cheapest strong attack")
    references: tuple[str, ...] = option(
        ("classical",),
        "reference attackers besides the runs from scratch (alternative:MODEL: another open model, e.g. "
        "alternative:effnet-lite1)",
    )
    runner: RunnerConfig = option(factory=RunnerConfig, help="where the runs execute", flat=True)
    device: str = option("cpu", "cpu or cuda")

    def __post_init__(self):
        if not self.budgets:
            raise ValueError("headstart: budgets must list at least one training-set size")
        for n in self.budgets:
            check_int("headstart", "budgets", n, 2)
        for lr in self.lrs:
            check_float("headstart", "lrs", lr, 0.0, open_low=True)
        if isinstance(self.steps, int):
            self.steps = (self.steps,)
        if not self.steps:
            raise ValueError("headstart: steps must list at least one step budget")
        for s in self.steps:
            check_int("headstart", "steps", s, 1)
        check_int("headstart", "batch_size", self.batch_size, 1)
        check_int("headstart", "test_samples", self.test_samples, 1, allow_none=True)


def _specs(cfg: HeadstartConfig, steps: int) -> list[AttackSpec]:
    """Fine-tuning at each rate (and the probe), each with its scratch twin, at `steps` steps per run."""
    common = {"max_steps": steps, "epochs": 10**6, "batch_size": cfg.batch_size}
    specs = [AttackSpec.of(cfg.optimizer, lr, **common) for lr in cfg.lrs]
    if cfg.probe and "probe" in STAGES["train"]:
        specs.append(AttackSpec.of(cfg.optimizer, cfg.lrs[0], train="probe", **common))
    return matched(specs)


def headstart(
    model: nn.Module,
    task: Task | TextTask | str,
    cfg: HeadstartConfig | None = None,
    out: str | Path | None = None,
    progress: bool = False,
) -> dict:
    """Per data budget: the model's best attack, the best reference attacker, and the uplift (see the module)."""
    cfg = cfg or HeadstartConfig()
    full = as_task(task)
    n_max = len(full.labels_train) if isinstance(full, TextTask) else len(full.y_train)
    too_big = [n for n in cfg.budgets if n > n_max]
    if too_big:
        raise ValueError(f"headstart: budgets {too_big} exceed the {n_max} training examples of {full.name!r}")
    for name in cfg.references:
        check_reference(name)  # before any work
    out = None if out is None else Path(out)
    rows = []
    for n, steps in ((n, s) for n in sorted(cfg.budgets) for s in sorted(cfg.steps)):
        sub = full.subset(n_train=n, n_test=cfg.test_samples, seed=0)
        text = sub if isinstance(sub, TextTask) else None
        tokens = for_model(sub, model)
        where = None if out is None else out / (f"n{n}" if len(cfg.steps) == 1 else f"n{n}-s{steps}")
        if where is not None:
            claim(where, identity(model, tokens))
        runs = run_suite(
            Target(model, tokens, device=cfg.device, text=text), _specs(cfg, steps), where, cfg.runner, progress
        )
        head = headline(runs)
        refs = reference_runs(ReferenceTarget(tokens, model, text, steps, 0), tuple(cfg.references), where)
        summary = uplift_summary(head, runs, refs, budget_of(tokens, steps))
        best, ref = head["locked"], summary["reference"]
        rows.append(
            {
                "n": n,
                "steps": steps,
                "model": None if best is None else {"accuracy": best["accuracy"], "attack": best["attack"]},
                "reference": {"accuracy": ref["accuracy"], "attacker": ref["attacker"]},
                "reference_runs": ref["runs"],
                "model_runs": [
                    {"attack": r["attack"], "accuracy": r.get("accuracy"), "error": r.get("error")}
                    for r in runs
                    if (r.get("config") or {}).get("start") != "scratch"
                ],
                "uplift": summary["uplift"],
            }
        )
        logger.info(
            "n=%d, %d steps: model %s, reference %s, uplift %s",
            n,
            steps,
            best and best["accuracy"],
            ref["accuracy"],
            summary["uplift"],
        )
    result = {"task": full.name, "config": dataclasses.asdict(cfg), "budgets": rows}
    if out is not None:
        write_text(out / "headstart.json", json.dumps(result, indent=2, default=str))
        write_text(out / "headstart.md", format_headstart(result) + "\n")
        plot_headstart(result, out / "headstart.png")
    return result


def format_headstart(result: dict) -> str:
    """The learning-curve table: per n and step budget, the model's best, the best reference, the uplift."""

    def acc(x) -> str:
        return "-" if x is None or x.get("accuracy") is None else f"{x['accuracy']:.4f}"

    rows = [
        [
            r["n"],
            r.get("steps", "-"),
            acc(r["model"]),
            "-" if r["model"] is None else f"`{r['model']['attack']}`",
            acc(r["reference"]),
            f"`{r['reference']['attacker']}`",
            "-" if r["uplift"] is None else f"{100 * r['uplift']:+.1f}",
        ]
        for r in result["budgets"]
    ]
    head = ["n (train)", "steps", "model's best", "attack", "best reference", "reference attacker", "uplift (points)"]
    return f"# Head start on {result['task']}\n\n" + markdown_table(head, rows)


def plot_headstart(result: dict, path: Path) -> None:
    """Accuracy against training-set size: the model's best and the best reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    budgets = sorted({r.get("steps") for r in result["budgets"]}, key=lambda v: v or 0)
    for i, steps in enumerate(budgets):
        rows = [r for r in result["budgets"] if r.get("steps") == steps]
        ns = [r["n"] for r in rows]
        at = "" if len(budgets) == 1 else f", {steps} steps"
        ax.plot(
            ns,
            [None if r["model"] is None else r["model"]["accuracy"] for r in rows],
            "o-",
            color=f"C{i}",
            label=f"the model's best attack{at}",
        )
        ax.plot(
            ns, [r["reference"]["accuracy"] for r in rows], "s--", color=f"C{i}", label=f"best reference attacker{at}"
        )
    ax.set_xscale("log")
    ax.set_xlabel("training examples n")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"head start on {result['task']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with writing_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


__all__ = ["HeadstartConfig", "format_headstart", "headstart", "plot_headstart"]
