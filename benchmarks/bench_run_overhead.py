"""Run cost against step cost (MiniLM-L6): what a one-run `attack` and a one-run `redteam` cost beyond their
optimizer steps, and fixed against dynamic padding, side by side in one run.

1. The step time: `fit` of the runs' own loop (Adam at 1e-3, `--batch-size`, one torch thread as every red-team run)
   on the same tokenized training split, timed over `--steps` steps after a warm-up.
2. `trainlock attack DIR --no-scratch` and `trainlock redteam DIR --budget 1` (one attack and its matched scratch
   twin, the classical reference, `--workers 0`), each the command line in a fresh process (imports, loading the
   model and the task, tokenizing, evaluations, reports: everything a user waits for), with `--threads 1`. Printed:
   wall time / (optimizer steps the command made x the step time). Goal: <= 1.5x.
3. Padding: per text task, the step time with every batch at max_length, cut to its longest row (the default),
   and length-bucketed (sorted within chunks of 50 batches; `fit(..., length_buckets=50)`), with the tokens per
   row each mode computes.

    OMP_NUM_THREADS=1 python benchmarks/bench_run_overhead.py [--quick] [--steps 40] [--no-padding]

`--quick`: a tiny random BERT and a toy CSV task instead of MiniLM (no model package; a smoke test, seconds).
Run it with another trainlock's source first on PYTHONPATH (e.g. `git archive HEAD src | tar -x -C /tmp/old`,
`PYTHONPATH=/tmp/old/src ... --no-padding`) for its numbers: the commands run from the same source.
Timings on a shared machine vary; read the ratios, which are within one run.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from goals import report

GOAL = 1.5
PADDING_TASKS = ("rotten-tomatoes", "tweets-sentiment", "bbc-news")


def _tiny_model_dir(root: Path) -> tuple[str, str]:
    """A saved tiny random BERT (its own word-level tokenizer) and a toy CSV task: (model dir, task name)."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tok_models
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    import trainlock as tl
    from trainlock.models.hf import HFClassifier

    words = ["good", "bad", "great", "awful", "fine", "movie", "film", "plot", "the", "a", "is", "was", "not", "very"]
    rows = ["text,label"]
    for i in range(240):
        n = 2 + (i * 7) % 20
        text = " ".join(words[(i + j) % len(words)] for j in range(n))
        rows.append(f"{text},{'pos' if (i % 2) else 'neg'}")
    csv = root / "toy.csv"
    csv.write_text("\n".join(rows) + "\n")
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tok = Tokenizer(tok_models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    model = HFClassifier(BertForSequenceClassification(cfg), tokenizer, max_length=32, source="tiny-bert")
    task = f"csv:{csv}"
    tl.save(model, root / "model", {"task": task})
    return str(root / "model"), task


def _minilm_dir(root: Path, base_task: str) -> str:
    """MiniLM-L6 with a fresh 2-class head after one step on `base_task`, saved by `trainlock train`."""
    out = root / "minilm"
    sizes = ["--train-samples", "32", "--test-samples", "32", "--max-steps", "1", "--batch-size", "16"]
    _cli(["train", "--model", "minilm-l6", "--task", base_task, *sizes, "--out", str(out)])
    return str(out)


def _cli(args: list[str]) -> float:
    """Run `trainlock ARGS` in a fresh process (this interpreter, this PYTHONPATH); its wall time in seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "trainlock", "--threads", "1", *args], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):  # redteam exits 1 when no run completed: its JSON still says why
        raise RuntimeError(f"trainlock {' '.join(args[:3])} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall


def _loop(steps: int, batch_size: int):
    from trainlock.train import LoopConfig

    return LoopConfig(optimizer="adam", lr=1e-3, epochs=10**6, max_steps=steps, batch_size=batch_size, device="cpu")


def step_time(model, task, steps: int, batch_size: int, buckets: int = 0) -> float:
    """Seconds per optimizer step of the runs' loop on `task` (a copy of `model`, after a 2-step warm-up)."""
    from trainlock.attacks.finetune import prepare
    from trainlock.train import fit

    model, task = prepare(model, task, "auto", 0)
    kw = {"length_buckets": buckets} if buckets and "length_buckets" in inspect.signature(fit).parameters else {}
    if buckets and not kw:
        return float("nan")  # an older trainlock: no bucketed batches
    fit(model, task, _loop(2, batch_size), progress=False, **kw)
    t0 = time.perf_counter()
    fit(model, task, _loop(steps, batch_size), progress=False, **kw)
    return (time.perf_counter() - t0) / steps


def overhead(args, root: Path) -> list[tuple[str, float, int, float]]:
    """(command, wall s, optimizer steps, wall / (steps x step time)) for attack and redteam."""
    from trainlock import tasks
    from trainlock.io.artifacts import load
    from trainlock.tasks import for_model

    if args.quick:
        model_dir, task_name = _tiny_model_dir(root)
        n_train, n_test, batch = 120, 40, 8
    else:
        model_dir, task_name = _minilm_dir(root, args.base_task), args.task
        n_train, n_test, batch = args.train_samples, args.test_samples, args.batch_size
    sizes = ["--train-samples", str(n_train), "--test-samples", str(n_test)]
    loop = ["--max-steps", str(args.steps), "--batch-size", str(batch), "--epochs", "1000"]
    torch.set_num_threads(1)
    model, _meta = load(model_dir)
    task = for_model(tasks.get(task_name).subset(n_train, n_test, seed=0), model)
    per_step = step_time(model, task, args.steps, batch)
    print(f"model {model_dir}: {per_step:.3f} s per step (batch {batch}, one thread); attack task {task_name}")
    rows = []
    attack_json = root / "attack.json"
    attack = ["attack", model_dir, "--task", task_name, "--no-scratch", "--optimizer", "adam", "--lr", "1e-3"]
    wall = _cli([*attack, *sizes, *loop, "--json", str(attack_json)])
    steps = json.loads(attack_json.read_text())["steps"]
    rows.append(("attack --no-scratch", wall, steps, wall / (steps * per_step)))
    rt_json = root / "redteam.json"
    redteam = ["redteam", model_dir, "--task", task_name, "--budget", "1", "--optimizers", "adam", "--lrs", "1e-3"]
    wall = _cli([*redteam, "--workers", "0", "--out", str(root / "rt"), "--json", str(rt_json), *sizes, *loop])
    runs = json.loads(rt_json.read_text())["runs"]
    steps = sum(int(r.get("cost_steps") or r.get("steps") or 0) for r in runs)
    rows.append((f"redteam --budget 1 ({len(runs)} runs)", wall, steps, wall / (steps * per_step)))
    return rows


def padding(args) -> list[tuple[str, str, float, float]]:
    """(task, mode, s per step, tokens per row computed) for fixed, dynamic and bucketed padding."""
    from trainlock import tasks
    from trainlock.models import build
    from trainlock.models.hf import trim_padding
    from trainlock.tasks import for_model
    from trainlock.train.loop import batch_order, token_lengths

    torch.set_num_threads(1)
    out = []
    names = ("csv",) if args.quick else PADDING_TASKS
    for name in names:
        if args.quick:
            root = Path(tempfile.mkdtemp(prefix="bench-pad-"))
            model_dir, task_name = _tiny_model_dir(root)
            from trainlock.io.artifacts import load

            model = load(model_dir)[0]
            text = tasks.get(task_name)
            n, batch = 120, 8
        else:
            text = tasks.get(name)
            model = build("minilm-l6", num_classes=text.num_classes)
            task_name, n, batch = name, args.train_samples, args.batch_size
        task = for_model(text.subset(n, 8, seed=0), model)
        lengths = token_lengths(task.x_train)
        for mode, dynamic, buckets in (("fixed", False, 0), ("dynamic", True, 0), ("bucketed", True, 50)):
            model.dynamic_padding = dynamic
            order = batch_order(len(task.y_train), batch, 100_003 * 0, lengths, buckets)[: args.pad_steps]
            width = [trim_padding(task.x_train[i]).shape[-1] if dynamic else task.x_train.shape[-1] for i in order]
            secs = step_time(model, task, args.pad_steps, batch, buckets)
            out.append((task_name, mode, secs, sum(width) / len(width)))
        model.dynamic_padding = True
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tiny random BERT and a toy CSV task (a smoke test)")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps of each run (default 40)")
    ap.add_argument("--task", default="tweets-sentiment", help="the attack task (default tweets-sentiment)")
    ap.add_argument("--base-task", default="rotten-tomatoes", help="the saved model's own task (the retain task)")
    ap.add_argument("--train-samples", type=int, default=600)
    ap.add_argument("--test-samples", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--pad-steps", type=int, default=10, help="steps timed per padding mode (default 10)")
    ap.add_argument("--no-padding", action="store_true", help="skip the padding table")
    ap.add_argument("--no-overhead", action="store_true", help="skip the attack / redteam ratios")
    ap.add_argument(
        "--cold", action="store_true", help="an empty token cache (a first invocation: every task tokenized once)"
    )
    args = ap.parse_args()
    if args.quick:
        args.steps, args.pad_steps = min(args.steps, 10), min(args.pad_steps, 4)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no load report per model built here
    if args.cold:
        os.environ["TRAINLOCK_TOKEN_CACHE"] = tempfile.mkdtemp(prefix="bench-tokens-")
    import trainlock

    cache = os.environ.get("TRAINLOCK_TOKEN_CACHE", "the default token cache")
    print(f"trainlock from {Path(trainlock.__file__).parent}; torch {torch.__version__}; tokens: {cache}")
    if not args.no_overhead:
        with tempfile.TemporaryDirectory(prefix="bench-run-overhead-") as tmp:
            rows = overhead(args, Path(tmp))
        print(f"| {'command':<28} | {'wall s':>7} | steps | wall / (steps x step time) | goal |")
        print(f"|{'-' * 30}|---------|-------|----------------------------|------|")
        for name, wall, steps, ratio in rows:
            ok = "ok" if ratio <= GOAL else "over"
            print(f"| {name:<28} | {wall:>7.1f} | {steps:>5} | {ratio:>25.2f}x | {GOAL}x {ok} |")
        for name, _, _, ratio in rows:
            report(f"MiniLM `{name}` wall / (steps x step time)", ratio, "<=", GOAL)
    if not args.no_padding:
        rows = padding(args)
        print(f"| {'task':<18} | {'padding':<8} | s / step | tokens per row | vs fixed |")
        print(f"|{'-' * 20}|{'-' * 10}|----------|----------------|----------|")
        fixed = {t: s for t, m, s, _ in rows if m == "fixed"}
        for task, mode, secs, width in rows:
            print(f"| {task[:18]:<18} | {mode:<8} | {secs:>8.3f} | {width:>14.1f} | {secs / fixed[task]:>7.2f}x |")


if __name__ == "__main__":
    main()
