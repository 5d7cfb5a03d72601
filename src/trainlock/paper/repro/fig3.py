"""Figure 3: the text lock across learning rates. AdamW at 1e-3 ... 1e-8 (the paper's sweep) on the RTE
stand-in, the locked model beside its unlocked base, with the best from-scratch run as the floor an attacker
always has. Uses the text lock of `text_lock` (shared with table1-text when both write under one parent)."""

from __future__ import annotations

from ...api import attack
from ...attacks import FineTuneConfig
from ...attacks.scratch import scratch_baseline
from ...io.tables import markdown_table
from .common import Study, finetune_row, pct, pyplot, save_fig
from .text_lock import STAND_INS, attack_loop, base_and_locked, task_for, text_settings

LRS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
ROLE = "RTE"
SCRATCH_LRS = (1e-3, 1e-4)


def run(study: Study, progress: bool = False) -> dict:
    s = text_settings(study.quick)
    (base, _base_meta), (locked, _) = base_and_locked(study, s, progress)
    task = task_for(ROLE, s)
    curves = {"base": {}, "locked": {}}
    for lr in LRS:
        cfg = FineTuneConfig(loop=attack_loop(s, lr, 0, study.device), eval_every=20, eval_samples=200)
        for who, model in (("base", base), ("locked", locked)):
            row = study.run(
                f"{who}/lr{lr:g}",
                lambda m=model, w=who: finetune_row(attack(m, cfg, task, progress=progress), who=w, lr=lr),
            )
            curves[who][f"{lr:g}"] = {"accuracy": row["accuracy"], "evals": row["evals"], "losses": row["losses"]}
    cfg = FineTuneConfig(loop=attack_loop(s, SCRATCH_LRS[0], 0, study.device), eval_every=20, eval_samples=200)
    scratch = study.run(
        "scratch",
        lambda: finetune_row(
            scratch_baseline(locked, cfg, task, progress=progress, lrs=SCRATCH_LRS[1:]), who="scratch"
        ),
    )
    summary = {
        "task": STAND_INS[ROLE][0],
        "chance": task.chance,
        "base": {k: v["accuracy"] for k, v in curves["base"].items()},
        "locked": {k: v["accuracy"] for k, v in curves["locked"].items()},
        "scratch": scratch["accuracy"],
        "scratch_lr": scratch["config"]["loop"]["lr"],
    }
    summary["locked_learns_at"] = [k for k, v in summary["locked"].items() if v > task.chance + 0.05]
    summary["base_learns_at"] = [k for k, v in summary["base"].items() if v > task.chance + 0.05]
    plots = [_plot(curves, summary, study)]
    return study.finish(summary, _table(summary, s, study), plots)


def _table(summary: dict, s, study: Study) -> str:
    rows = [
        [
            lr,
            pct(summary["base"][lr]),
            pct(summary["locked"][lr]),
            f"{100 * (summary['locked'][lr] - summary['base'][lr]):+.1f}",
        ]
        for lr in summary["base"]
    ]
    locked_at, base_at = summary["locked_learns_at"], summary["base_learns_at"]
    verdict = (
        "reproduced: the locked model learns at no rate where the base learns"
        if base_at and not set(locked_at) & set(base_at)
        else "not comparable: the base learns at no rate either"
        if not base_at
        else f"not reproduced: the locked model learns at lr {', '.join(sorted(set(locked_at) & set(base_at)))}"
    )
    return "\n".join(
        [
            f"# Figure 3 ({'quick' if study.quick else 'full'}): the text lock across learning rates",
            "",
            f"{s.model}, locked on the MRPC stand-in (alpha 0.99, top-k 2, ce+kl); attacked on {summary['task']} "
            f"(the RTE stand-in) with AdamW, weight decay 0.01, linear schedule, batch 8, {s.attack_epochs} epoch(s), "
            f"at most {s.n_train} training examples. 'Learns' = more than 5 points above the majority class "
            f"({pct(summary['chance'])}). The paper: the locked DeBERTa does not converge at any rate in 1e-3..1e-8; "
            "the base learns only between 1e-3 and 1e-6.",
            "",
            markdown_table(["AdamW lr", "base", "locked", "locked - base (points)"], rows),
            "",
            f"From scratch (best of lr {', '.join(f'{x:g}' for x in SCRATCH_LRS)}): {pct(summary['scratch'])}.",
            "",
            f"Verdict: {verdict}.",
            "",
        ]
    )


def _plot(curves: dict, summary: dict, study: Study) -> str:
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    lrs = [float(k) for k in summary["base"]]
    ax.semilogx(lrs, list(summary["base"].values()), "o--", label="base")
    ax.semilogx(lrs, list(summary["locked"].values()), "o-", label="locked")
    ax.axhline(summary["scratch"], color="C7", ls=":", label="scratch (best lr)")
    ax.axhline(summary["chance"], color="gray", lw=0.6, label="majority class")
    ax.set_xlabel("AdamW learning rate")
    ax.set_ylabel("test accuracy after fine-tuning")
    ax.legend(fontsize=7)
    for i, k in enumerate(summary["base"]):
        for who, style in (("base", "--"), ("locked", "-")):
            ev = curves[who][k]["evals"]
            bx.plot(
                [e[0] for e in ev],
                [e[1] for e in ev],
                style,
                color=f"C{i}",
                label=f"{who} {k}" if who == "locked" else None,
            )
    bx.set_xlabel("step")
    bx.set_ylabel("accuracy (probe)")
    bx.legend(fontsize=6, title="locked (solid) / base (dashed)")
    fig.suptitle("Figure 3: locked vs base across learning rates (RTE stand-in)")
    return save_fig(fig, study.out / "fig3.png")


def params(quick: bool) -> dict:
    import dataclasses

    return {"settings": dataclasses.asdict(text_settings(quick)), "lrs": list(LRS), "role": ROLE}
