"""Table 1, text half: a pretrained transformer fine-tuned on the MRPC stand-in, locked with SpecDef at the
paper's text settings (see `text_lock`), then fine-tuned on the three other stand-ins (3 seeds in --full),
beside the unlocked base and the same architecture re-initialized. MiniLM-L6 stands in for DeBERTa-v3-xsmall;
--full adds SmolLM2-135M (the paper's decoder)."""

from __future__ import annotations

import dataclasses
import statistics

from ...api import attack
from ...attacks import FineTuneConfig
from ...attacks.scratch import scratch_baseline
from ...io.tables import markdown_table
from . import redteam_cell
from .common import Study, finetune_row, pct, pyplot, save_fig, verdict
from .text_lock import (
    ATTACKED,
    AUTHORIZED,
    F1_TASKS,
    STAND_INS,
    attack_loop,
    base_and_locked,
    scores,
    task_for,
    text_settings,
)

PAPER = {  # (base, SpecDef) per GLUE task; F1 for MRPC and QQP
    "minilm-l6": {"MRPC": (0.90, 0.90), "RTE": (0.69, 0.52), "QQP": (0.83, 0.42), "QNLI": (0.85, 0.45)},  # DeBERTa
    "smollm2-135m": {"MRPC": (0.85, 0.84), "RTE": (0.71, 0.52), "QQP": (0.71, 0.20), "QNLI": (0.84, 0.52)},
}
PAPER_MODEL = {"minilm-l6": "DeBERTa-v3-xsmall", "smollm2-135m": "SmolLM2-135M"}
LR = 5e-5
SCRATCH_LRS = (5e-4,)  # a re-initialized transformer wants a larger rate; the baseline is its best
REDTEAM_LRS = (5e-5, 1e-4, 1e-3)
REDTEAM = {True: (8, 60), False: (24, 600)}  # quick / full: (runs, steps per run)


def _models(quick: bool) -> tuple[str, ...]:
    return ("minilm-l6",) if quick else ("minilm-l6", "smollm2-135m")


def run(study: Study, progress: bool = False) -> dict:
    summary: dict = {}
    for name in _models(study.quick):
        summary[name] = _one_model(study, name, progress)
    plots = [_plot(summary, study)]
    return study.finish(summary, _table(summary, study), plots)


def majority_f1(task) -> float:
    """Macro-F1 of always predicting the test split's most common class (averaged over the classes present,
    as `macro_f1` does): 2p / (1 + p) for that class, 0 for the others."""
    counts = [task.labels_test.count(c) for c in range(task.num_classes)]
    present = sum(1 for c in counts if c)
    p = max(counts) / sum(counts)
    return (2 * p / (1 + p)) / present


def _metric(role: str, row: dict) -> float:
    return row["f1"] if role in F1_TASKS else row["accuracy"]


def _one_model(study: Study, name: str, progress: bool) -> dict:
    s = text_settings(study.quick, name)
    (base, base_meta), (locked, locked_meta) = base_and_locked(study, s, progress)
    auth = task_for(AUTHORIZED, s)
    out = {
        "authorized": {"base": base_meta["metrics"], "locked": locked_meta["metrics"], "chance": auth.chance},
        "cells": {},
    }
    for role in ATTACKED:
        task = task_for(role, s)
        per = {"base": [], "locked": [], "scratch": []}
        for seed in s.seeds:
            cfg = FineTuneConfig(loop=attack_loop(s, LR, seed, study.device), eval_every=20, eval_samples=200)
            for who, model in (("base", base), ("locked", locked)):

                def one(m=model, who=who):
                    res = attack(m, cfg, task, progress=progress)
                    return finetune_row(res, who=who, seed=seed, **scores(res.model, task))

                per[who].append(study.run(f"{name}/{role}/{who}/seed{seed}", one))

            def scratch():
                res = scratch_baseline(locked, cfg, task, progress=progress, lrs=SCRATCH_LRS)
                return finetune_row(res, who="scratch", seed=seed, **scores(res.model, task))

            per["scratch"].append(study.run(f"{name}/{role}/scratch/seed{seed}", scratch))
        cell = {who: statistics.fmean(_metric(role, r) for r in rows) for who, rows in per.items()}
        cell["chance"] = majority_f1(task) if role in F1_TASKS else task.chance
        cell["verdict"], cell["why"] = verdict(cell["locked"], cell["base"], cell["chance"], margin=0.05)
        out["cells"][role] = cell
    role = ATTACKED[0]
    task = task_for(role, s)
    budget, steps = REDTEAM[study.quick]
    rt = study.run(f"{name}/{role}/redteam", lambda: _redteam(locked, task, study, name, budget, steps))
    out["redteam"] = {"task": role, **rt, "budget": budget, "steps": steps}
    return out


def _redteam(locked, task, study, name, budget, steps):
    from ...red_team import RedTeamConfig, redteam
    from ...train import LoopConfig

    cfg = RedTeamConfig(
        loop=LoopConfig(device=study.device, max_steps=steps, batch_size=8, epochs=10**6, schedule="linear"),
        budget=budget,
        runner=redteam_cell.runner(study),
        optimizers=("adamw", "adam"),
        transforms=redteam_cell.TRANSFORMS,
        lrs=REDTEAM_LRS,
    )
    res = redteam(locked, task, cfg, out=study.out / f"redteam-{name}")
    best, scr = res["locked"], res["scratch"]
    return {
        "locked": best and best["accuracy"],
        "attack": best and best["attack"],
        "scratch": scr and scr["accuracy"],
        "reference": res["reference"]["accuracy"],
        "reference_attacker": res["reference"]["attacker"],
        "uplift": res["uplift"],
        "runs": len(res["runs"]),
    }


def _table(summary: dict, study: Study) -> str:
    lines = [f"# Table 1, text ({'quick' if study.quick else 'full'})", ""]
    for name, res in summary.items():
        s = text_settings(study.quick, name)
        lines += [
            f"## {name} (standing in for the paper's {PAPER_MODEL[name]})",
            "",
            f"Base: pretrained {name} fine-tuned {s.train_epochs} epoch(s) on at most {s.auth_train} examples of "
            f"the MRPC stand-in (AdamW 5e-5, batch 8). Lock: alpha 0.99, top-k 2, ce+kl, AdamW {s.lock_lr:g}, "
            f"{s.lock_epochs} epoch(s) over at most {s.n_train} of them; attacks: AdamW {LR:g}, weight decay 0.01, linear "
            f"schedule, batch 8, {s.attack_epochs} epoch(s), at most {s.n_train} training / "
            f"{s.n_test or 'all'} test examples, {max(s.max_length, 0)} tokens, seeds {list(s.seeds)} "
            f"(mean). Scratch: the same architecture re-initialized, best of lr {LR:g} and "
            f"{', '.join(f'{x:g}' for x in SCRATCH_LRS)}. F1 (macro) for MRPC and QQP, accuracy otherwise, "
            "as the paper; 'chance' is the majority-class predictor's score on the same metric. Verdict: reproduced "
            "when the locked model ends within 5 points of chance while the base ends at least 10 above it. "
            "Stand-ins: " + "; ".join(f"{g} = `{t}`, {d}" for g, (t, d) in STAND_INS.items()) + ".",
            "",
        ]
        head = [
            "paper's task",
            "our stand-in",
            "paper base",
            "paper SpecDef",
            "our base",
            "our locked",
            "scratch (best lr)",
            "red team worst",
            "verdict",
        ]
        a = res["authorized"]
        pa = PAPER[name][AUTHORIZED]
        if a["base"]["accuracy"] < a["chance"] + 0.10:
            auth_verdict = (
                f"not comparable: the base did not learn its own task (accuracy {pct(a['base']['accuracy'])}, "
                f"majority class {pct(a['chance'])})"
            )
        elif a["locked"]["f1"] >= a["base"]["f1"] - 0.01:
            auth_verdict = "reproduced: utility kept within 1 point"
        else:
            auth_verdict = f"not reproduced: {100 * (a['base']['f1'] - a['locked']['f1']):.1f} points of F1 lost"
        rows = [
            [
                f"{AUTHORIZED} (authorized)",
                STAND_INS[AUTHORIZED][0],
                pct(pa[0]),
                pct(pa[1]),
                pct(a["base"]["f1"]),
                pct(a["locked"]["f1"]),
                "-",
                "-",
                auth_verdict,
            ]
        ]
        rt = res["redteam"]
        up = rt.get("uplift", rt.get("advantage"))  # results written before references: over scratch
        adv = "-" if up is None else f"{100 * up:+.1f}"
        ref = rt.get("reference", rt["scratch"])
        for role, c in res["cells"].items():
            p = PAPER[name][role]
            worst = f"{pct(rt['locked'])} ({rt['attack']}, accuracy)" if role == rt["task"] else "-"
            rows.append(
                [
                    role,
                    STAND_INS[role][0],
                    pct(p[0]),
                    pct(p[1]),
                    pct(c["base"]),
                    pct(c["locked"]),
                    pct(c["scratch"]),
                    worst,
                    f"{c['verdict']}: {c['why']}",
                ]
            )
        lines += [
            markdown_table(head, rows),
            "",
            f"Red team on {rt['task']}: {rt['runs']} runs of {rt['steps']} steps (adamw/adam at "
            f"{', '.join(f'{x:g}' for x in REDTEAM_LRS)}, from the released weights and from scratch, then "
            f"{' and '.join(redteam_cell.TRANSFORMS)}); worst {pct(rt['locked'])}, best reference attacker "
            f"{pct(ref)} ({rt.get('reference_attacker', 'scratch')}), uplift {adv} points.",
            "",
        ]
    return "\n".join(lines)


def _plot(summary: dict, study: Study) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(summary), figsize=(6 * len(summary), 3.8), squeeze=False)
    for ax, (name, res) in zip(axes[0], summary.items(), strict=False):
        roles = list(res["cells"])
        x = range(len(roles))
        for i, (who, c) in enumerate((("base", "C0"), ("locked", "C3"), ("scratch", "C7"))):
            ax.bar([j + 0.2 * (i - 1) for j in x], [res["cells"][r][who] for r in roles], 0.2, color=c, label=who)
        ax.plot(list(x), [PAPER[name][r][0] for r in roles], "k^", label="paper base")
        ax.plot(list(x), [PAPER[name][r][1] for r in roles], "kv", label="paper SpecDef")
        ax.set_xticks(list(x), [f"{r}\n({STAND_INS[r][0]})" for r in roles], fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(name)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("after fine-tuning (F1 for QQP, else accuracy)")
    return save_fig(fig, study.out / "table1-text.png")


def params(quick: bool) -> dict:
    return {
        "settings": {m: dataclasses.asdict(text_settings(quick, m)) for m in _models(quick)},
        "lr": LR,
        "scratch_lrs": list(SCRATCH_LRS),
    }
