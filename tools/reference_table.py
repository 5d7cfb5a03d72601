"""The best reference attacker beside the probe attack on a released text model: a markdown table (issue 23).

For each text task, the seeded subset every text command draws (`--train-samples` / `--test-samples`, seed 0, as
`trainlock.cli.common.subset_task`): the `classical` reference (TF-IDF word 1-2 + char 3-5 grams + logistic
regression, C by 5-fold CV on the training split) and, for the `--probe-tasks`, the red team's `probe` train stage
on the model's released weights (logistic regression on its frozen features, the layer and C by CV). One run at a
time, each with its wall time.

    python tools/reference_table.py                                     # the MiniLM lock table's text tasks
    python tools/reference_table.py --tasks bbc-news --probe-tasks bbc-news --model hf:DIR --json out.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import trainlock as tl
from trainlock.attacks.references import ReferenceTarget, run_reference
from trainlock.io.tables import markdown_table
from trainlock.red_team import AttackSpec, Target, run_spec

TASKS = ("bbc-news", "tweets-sentiment", "rotten-tomatoes")
PROBE_TASKS = ("bbc-news", "tweets-sentiment")


def _f(v, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def classical_row(task: str, text, tokens) -> dict:
    (run,) = run_reference("classical", ReferenceTarget(task=tokens, text=text, seed=0))
    d = run.details
    return {
        "task": task,
        "attacker": run.attacker,
        "accuracy": run.accuracy,
        "cv_accuracy": d.get("cv_accuracy"),
        "C": d.get("C"),
        "layer": None,
        "n_train": run.n_train,
        "wall_s": run.wall_s,
        "error": run.error,
    }


def probe_row(task: str, text, model, model_name: str) -> dict:
    t0 = time.perf_counter()
    row = run_spec(Target(model, text, text=text), AttackSpec(train="probe"))
    probe = row.extra.get("probe", {})
    return {
        "task": task,
        "attacker": f"probe:{model_name}",
        "accuracy": row.accuracy,
        "cv_accuracy": probe.get("cv_accuracy"),
        "C": probe.get("C"),
        "layer": probe.get("layer"),
        "cv_by_layer": probe.get("cv_by_layer"),
        "n_train": len(text.labels_train),
        "wall_s": time.perf_counter() - t0,
        "error": row.skipped,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), help="text tasks for the classical reference")
    p.add_argument("--probe-tasks", nargs="*", default=list(PROBE_TASKS), help="text tasks to probe the model on")
    p.add_argument("--model", default="minilm-l6", help="the released model whose features are probed")
    p.add_argument("--train-samples", type=int, default=600)
    p.add_argument("--test-samples", type=int, default=300)
    p.add_argument("--threads", type=int, default=1, help="torch threads for the model's forward passes")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for task in dict.fromkeys([*args.tasks, *args.probe_tasks]):
        text = tl.tasks.get(task).subset(n_train=args.train_samples, n_test=args.test_samples, seed=0)
        model = tl.models.build(args.model, num_classes=text.num_classes)
        tokens = model.encode_task(text)
        if task in args.tasks:
            rows.append(classical_row(task, text, tokens))
            print(json.dumps(rows[-1]), flush=True)
        if task in args.probe_tasks:
            rows.append(probe_row(task, text, model, args.model))
            print(json.dumps(rows[-1]), flush=True)
    header = ["task", "attacker", "test acc", "CV acc", "C", "layer", "n_train", "wall s"]
    table = [
        [
            r["task"],
            r["attacker"] + (f" (error: {r['error']})" if r["error"] else ""),
            _f(r["accuracy"]),
            _f(r["cv_accuracy"]),
            _f(r["C"], "g"),
            r["layer"] or "-",
            r["n_train"],
            _f(r["wall_s"], ".1f"),
        ]
        for r in rows
    ]
    print(markdown_table(header, table, align="llrrrlrr"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    main()
