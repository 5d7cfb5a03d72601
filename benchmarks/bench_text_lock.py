"""SpecDef on a pretrained transformer (MiniLM-L6): step time and peak memory, side by side in one run.

1. A SpecDef step (retain ce+kl, alpha 0.99, top-k 2 over every attention and MLP matrix, warm-started
   power iteration) against a retain-only step (the same ce+kl loss without the spectral term), in
   alternating blocks on one batch. Goal: ratio <= 1.10.
2. Peak memory of a lock run against a plain fine-tuning run of the same steps, each in a fresh process.
   Loading the model has a transient peak of its own (it decides max RSS for so few steps), so the peak
   is reset after loading (Linux: `/proc/self/clear_refs` 5 resets VmHWM) and read from VmHWM after the
   steps; printed beside the resident size after loading. Goal: ratio <= 1.25.

    python benchmarks/bench_text_lock.py [--tiny] [--batch-size 16] [--max-length 64]

`--tiny` uses a small random BERT instead of MiniLM (no model package needed; a smoke test).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from goals import report
from memory import reset_peak, status_mb  # noqa: F401  (the child processes call them)


def build(tiny: bool, max_length: int):
    import trainlock as tl

    if not tiny:
        return tl.models.build("minilm-l6", num_classes=2, max_length=max_length)
    from transformers import BertConfig, BertForSequenceClassification

    from trainlock.models.hf import HFClassifier

    cfg = BertConfig(
        vocab_size=1000,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=max_length,
        num_labels=2,
    )
    return HFClassifier(BertForSequenceClassification(cfg), None, max_length)


def batch(model, n: int, length: int):
    vocab = model.model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (n, length), generator=g)
    x = torch.stack([ids, torch.ones_like(ids), torch.zeros_like(ids)], dim=1)
    return x, torch.randint(0, 2, (n,), generator=g)


def stepper(model, x, y, spectral: bool, top_k: int = 2, alpha: float = 0.99, plain: bool = False):
    """One optimizer step as a closure: the lock's (ce+kl against a frozen copy, Adadelta, with or without the
    spectral term), or with `plain` an ordinary fine-tuning step (cross-entropy, AdamW, no frozen copy)."""
    from trainlock.locks import find_lockable, spectral_term

    lockables = find_lockable(model)
    model.train()
    if plain:
        opt = torch.optim.AdamW(model.parameters(), lr=5e-5)

        def finetune_step() -> None:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return finetune_step, len(lockables)
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)

    def step() -> None:
        logits = model(x)
        with torch.no_grad():
            target = F.log_softmax(ref(x), dim=1)
        retain = F.cross_entropy(logits, y) + F.kl_div(
            F.log_softmax(logits, 1), target, log_target=True, reduction="batchmean"
        )
        loss = alpha * retain - (1 - alpha) * spectral_term(lockables, top_k) if spectral else retain
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, len(lockables)


def timing(args) -> None:
    torch.manual_seed(0)
    model = build(args.tiny, args.max_length)
    x, y = batch(model, args.batch_size, args.max_length)
    plain, _ = stepper(model, x, y, spectral=False)
    spec, n = stepper(model, x, y, spectral=True)
    for s in (plain, spec):
        for _ in range(2):
            s()
    ratios, times = [], {True: [], False: []}
    for b in range(args.blocks):
        pair = {}
        for is_spec in (False, True) if b % 2 == 0 else (True, False):
            t = time.perf_counter()
            for _ in range(args.steps):
                (spec if is_spec else plain)()
            pair[is_spec] = (time.perf_counter() - t) / args.steps
            times[is_spec].append(pair[is_spec])
        ratios.append(pair[True] / pair[False])
    r = statistics.median(ratios)
    print(
        f"{'tiny BERT' if args.tiny else 'MiniLM-L6'}: batch {args.batch_size} x {args.max_length} tokens, {n} "
        f"lockable matrices, threads {torch.get_num_threads()}"
    )
    print(
        f"  retain-only (ce+kl) step {statistics.median(times[False]):.3f} s | SpecDef step "
        f"{statistics.median(times[True]):.3f} s | ratio {r:.3f} (median of {len(ratios)} paired blocks) "
        f"goal <= 1.10: {'ok' if r <= 1.10 else 'MISS'}",
        flush=True,
    )
    report(f"{'tiny BERT' if args.tiny else 'MiniLM-L6'} SpecDef step / retain-only step", r, "<=", 1.10)


def peak(args, kind: str) -> tuple[float, float]:
    """(resident MB after loading, peak MB during the steps) of a fresh process running `kind`."""
    code = (
        f"import sys; sys.argv = {sys.argv[:1]!r}; sys.path[:0] = {sys.path!r}\n"
        f"import bench_text_lock as b, argparse, gc, torch\n"
        f"a = argparse.Namespace(**{vars(args)!r})\n"
        f"torch.manual_seed(0); m = b.build(a.tiny, a.max_length); x, y = b.batch(m, a.batch_size, a.max_length)\n"
        f"gc.collect(); b.reset_peak(); loaded = b.status_mb('VmRSS')\n"
        f"s, _ = b.stepper(m, x, y, spectral=True, plain={kind == 'finetune'})\n"
        f"[s() for _ in range(a.steps)]\n"
        f"print(loaded, b.status_mb('VmHWM'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, top = out.stdout.split()[-2:]
    return float(loaded), float(top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="a small random BERT instead of MiniLM")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed block (and per memory run)")
    args = ap.parse_args()
    timing(args)
    (fl, fine), (ll, lock) = peak(args, "finetune"), peak(args, "lock")
    print(
        f"  peak memory during {args.steps} steps (VmHWM reset after loading; resident after loading "
        f"{fl:.0f} / {ll:.0f} MB): plain fine-tuning (AdamW) {fine:.0f} MB | SpecDef lock (ce+kl with a frozen "
        f"copy, Adadelta) {lock:.0f} MB | ratio {lock / fine:.3f} goal <= 1.25: "
        f"{'ok' if lock / fine <= 1.25 else 'MISS'}; above the loaded model: {fine - fl:.0f} / {lock - ll:.0f} MB"
    )
    report("MiniLM-L6 lock peak memory / fine-tuning peak", lock / fine, "<=", 1.25)


if __name__ == "__main__":
    main()
