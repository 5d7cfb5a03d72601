"""Figure 4 (Appendix C): preconditioned optimizers against the lock. A four-layer MLP on a two-layer CNN,
trained on MNIST (Adadelta lr 1, gamma 0.7), locked with SpecDef at the same settings (alpha 0.5, top-k 1),
then trained on CIFAR-10 (BIG-bench's 10k test images, greyscale 28x28) with SGD, AdamW, PSGD Kron and XMat
(the paper's four) plus our K-FAC and L-BFGS: at the paper's rates (SGD/AdamW 0.1, Kron 1e-3, XMat 1e-2) and
at each optimizer's best rate for the unlocked base; the re-initialized network gets the same grid. The uplift is
the worst locked run minus the best reference attacker: the best of those runs from scratch and the classical
reference (logistic regression on pixels, a small CNN at the attack's step budget; `trainlock.red_team.uplift`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ... import tasks
from ...api import attack
from ...attacks import FineTuneConfig
from ...attacks.references import ReferenceTarget, best_reference
from ...attacks.scratch import scratch_baseline
from ...io.tables import markdown_table
from ...red_team.suite import LR_GRID
from ...red_team.uplift import reference_runs
from ...train import LoopConfig
from .common import Study, finetune_row, gray28, mnist_base_and_lock, pct, pyplot, save_fig, verdict

PAPER_LR = {"sgd": 0.1, "adamw": 0.1, "psgd-kron": 1e-3, "xmat": 1e-2}
OPTIMIZERS = ("sgd", "adamw", "psgd-kron", "xmat", "kfac", "lbfgs")


@dataclass
class Settings:
    n_train: int | None
    n_test: int | None
    epochs: int  # training and locking (the paper: 10 each)
    attack_epochs: int  # the paper: 10


def settings(quick: bool) -> Settings:
    return (
        Settings(n_train=8000, n_test=1000, epochs=3, attack_epochs=1)
        if quick
        else Settings(n_train=None, n_test=None, epochs=10, attack_epochs=10)
    )


def grid(opt: str) -> tuple[float, ...]:
    return tuple(sorted({*LR_GRID[opt], *([PAPER_LR[opt]] if opt in PAPER_LR else [])}))


def run(study: Study, progress: bool = False) -> dict:
    s, device = settings(study.quick), study.device
    mnist = tasks.get("mnist").subset(s.n_train, s.n_test)
    cifar = gray28(tasks.get("cifar10-bb")).subset(s.n_train, s.n_test)
    (base, base_meta), (locked, locked_meta) = mnist_base_and_lock(
        study, "cnn", {"hidden": [128, 128, 128]}, mnist, s.epochs, progress
    )

    def cfg(opt, lr):
        return FineTuneConfig(
            loop=LoopConfig(optimizer=opt, lr=lr, epochs=s.attack_epochs, batch_size=32, device=device),
            eval_every=20,
            eval_samples=500,
        )

    out = {}
    for opt in OPTIMIZERS:
        runs = {}
        for lr in grid(opt):
            runs[f"base/{lr:g}"] = study.run(
                f"{opt}/base/lr{lr:g}",
                lambda o=opt, r=lr: finetune_row(attack(base, cfg(o, r), cifar, progress=progress), lr=r),
            )
            runs[f"scratch/{lr:g}"] = study.run(
                f"{opt}/scratch/lr{lr:g}",
                lambda o=opt, r=lr: finetune_row(scratch_baseline(locked, cfg(o, r), cifar, progress=progress), lr=r),
            )
        best_lr = max(grid(opt), key=lambda r: runs[f"base/{r:g}"]["accuracy"])
        lrs = dict.fromkeys([PAPER_LR.get(opt, best_lr), best_lr])
        for lr in lrs:
            runs[f"locked/{lr:g}"] = study.run(
                f"{opt}/locked/lr{lr:g}",
                lambda o=opt, r=lr: finetune_row(attack(locked, cfg(o, r), cifar, progress=progress), lr=r),
            )
        paper_lr = PAPER_LR.get(opt)
        out[opt] = {
            "paper_lr": paper_lr,
            "best_base_lr": best_lr,
            "base_at_paper_lr": None if paper_lr is None else runs[f"base/{paper_lr:g}"]["accuracy"],
            "locked_at_paper_lr": None if paper_lr is None else runs[f"locked/{paper_lr:g}"]["accuracy"],
            "base_best": runs[f"base/{best_lr:g}"]["accuracy"],
            "locked_at_best": runs[f"locked/{best_lr:g}"]["accuracy"],
            "scratch_best": max(runs[f"scratch/{r:g}"]["accuracy"] for r in grid(opt)),
            "curves": {
                k: v["evals"]
                for k, v in runs.items()
                if k.startswith(("base", "locked")) and k.split("/")[1] in {f"{x:g}" for x in lrs}
            },
        }
    steps = s.attack_epochs * -(-len(cifar.y_train) // 32)  # the attacks' step budget (batch 32)
    classical = study.run(
        "reference/classical",
        lambda: {"runs": reference_runs(ReferenceTarget(cifar, locked, None, steps, 0), ("classical",))},
    )
    worst = max((v["locked_at_best"], k) for k, v in out.items())
    scratch = [
        {"attacker": f"scratch:{opt}@{lr:g}", "accuracy": study.runs[f"{opt}/scratch/lr{lr:g}"]["accuracy"]}
        for opt in OPTIMIZERS
        for lr in grid(opt)
    ]
    finite = [r for r in scratch + classical["runs"] if isinstance(r.get("accuracy"), (int, float))]  # not "nan"
    best = best_reference(finite) or {"accuracy": None, "attacker": None}
    summary = {
        "authorized": {"base": base_meta["metrics"]["accuracy"], "locked": locked_meta["metrics"]["accuracy"]},
        "optimizers": out,
        "chance": cifar.chance,
        "worst_locked": worst,
        "reference": {**best, "runs": scratch + classical["runs"]},
        "uplift": None if best["accuracy"] is None else worst[0] - best["accuracy"],
    }
    plots = [_plot(summary, study)]
    return study.finish(summary, _table(summary, s, study), plots)


def _table(summary: dict, s: Settings, study: Study) -> str:
    head = [
        "optimizer",
        "paper lr",
        "base @ paper lr",
        "locked @ paper lr",
        "best base lr",
        "base @ best",
        "locked @ best",
        "scratch (best lr)",
        "verdict",
    ]
    rows = []
    for opt, v in summary["optimizers"].items():
        locked = max(x for x in (v["locked_at_paper_lr"], v["locked_at_best"]) if x is not None)
        word, why = verdict(locked, v["base_best"], summary["chance"])
        verdict_text = f"{word}: {why}"
        rows.append(
            [
                opt,
                "-" if v["paper_lr"] is None else f"{v['paper_lr']:g}",
                pct(v["base_at_paper_lr"]),
                pct(v["locked_at_paper_lr"]),
                f"{v['best_base_lr']:g}",
                pct(v["base_best"]),
                pct(v["locked_at_best"]),
                pct(v["scratch_best"]),
                verdict_text,
            ]
        )
    a = summary["authorized"]
    w, wopt = summary["worst_locked"]
    ref, up = summary.get("reference") or {}, summary.get("uplift")
    if not ref:  # results written before references: the best from scratch
        ref = {"accuracy": max(v["scratch_best"] for v in summary["optimizers"].values()), "attacker": "scratch"}
        up = w - ref["accuracy"]
    failed = [f"- reference {r['attacker']} failed: {r['error']}" for r in ref.get("runs", []) if r.get("error")]
    scale = (
        f"quick: {s.n_train or 'all'} train / {s.n_test or 'all'} test examples, {s.epochs} epochs to train and to lock, "
        f"{s.attack_epochs} attack epoch(s)"
        if study.quick
        else "full: every example, 10 + 10 epochs, 10 attack epochs"
    )
    return "\n".join(
        [
            f"# Figure 4 ({'quick' if study.quick else 'full'}): preconditioners against the lock",
            "",
            f"{scale}; batch 32; CIFAR-10 greyscale 28x28 (chance 10%). MNIST accuracy: base {pct(a['base'])}, locked "
            f"{pct(a['locked'])} (the paper: 99% -> 99%). The paper's figure: every optimizer is held at chance on the "
            "locked model. Grids per optimizer: the red team's (trainlock.red_team.suite.LR_GRID) plus the paper's rate.",
            "",
            markdown_table(head, rows),
            "",
            f"Red team's worst over these optimizers on the locked model: {pct(w)} ({wopt}); the best reference "
            f"attacker (the runs from scratch over every optimizer and rate, and the classical reference): "
            f"{pct(ref['accuracy'])} ({ref['attacker']}); uplift "
            f"{'-' if up is None else f'{100 * up:+.1f}'} points.",
            *failed,
            "",
        ]
    )


def _plot(summary: dict, study: Study) -> str:
    plt = pyplot()
    opts = list(summary["optimizers"])
    fig, axes = plt.subplots(1, len(opts), figsize=(3 * len(opts), 3.2), sharey=True, squeeze=False)
    for ax, opt in zip(axes[0], opts, strict=False):
        for i, (k, ev) in enumerate(summary["optimizers"][opt]["curves"].items()):
            ax.plot(
                [e[0] for e in ev],
                [e[1] for e in ev],
                "--" if k.startswith("base") else "-",
                color=f"C{i // 2}",
                label=k,
            )
        ax.axhline(summary["optimizers"][opt]["scratch_best"], color="C7", ls=":", label="scratch best")
        ax.set_title(opt)
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("CIFAR-10 accuracy (probe)")
    fig.suptitle("Figure 4: preconditioned optimizers, base (dashed) vs locked (solid)")
    return save_fig(fig, study.out / "fig4.png")


def params(quick: bool) -> dict:
    return {
        "settings": dataclasses.asdict(settings(quick)),
        "optimizers": list(OPTIMIZERS),
        "grids": {o: list(grid(o)) for o in OPTIMIZERS},
    }
