"""DLR-Lock's claimed barrier, measured: the cost of training the locked model against the original.

For each DLR-Net depth, `dlr` replaces every MLP block of the model by a module-wise distilled DLR-Net; the
table puts side by side, original vs locked, on one batch: forward time (inference), forward + backward time
(one fine-tuning step), the activation bytes autograd saves for backward (exact, from saved-tensor hooks),
parameters, and the authorized accuracy (with --model-dir, a fine-tuned classifier and its task). Timings
are the best of `--repeats` on this machine, measured in one run.

    python benchmarks/bench_dlr.py [--model-dir DIR --task rotten-tomatoes] [--depths 4 8 16] [--samples 256]

Without --model-dir: pretrained MiniLM-L6 with an untrained head (costs only; accuracies are not meaningful).
"""

from __future__ import annotations

import argparse

import torch

import trainlock as tl
from trainlock.locks.dlr import cost_profile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=None, help="a fine-tuned model directory (default: MiniLM, fresh head)")
    ap.add_argument("--task", default="rotten-tomatoes", help="authorized task (distillation inputs, accuracy)")
    ap.add_argument("--depths", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--samples", type=int, default=256, help="examples whose block inputs drive the distillation")
    ap.add_argument("--distill-steps", type=int, default=300)
    ap.add_argument("--test-samples", type=int, default=500)
    ap.add_argument("--batch", type=int, default=32, help="batch of the cost profile")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    task = tl.tasks.get(args.task)
    if args.model_dir:
        model, _ = tl.load(args.model_dir)
    else:
        model = tl.models.build("minilm-l6", num_classes=task.num_classes, max_length=64)
    task = tl.tasks.for_model(task.subset(max(args.samples, args.batch), args.test_samples), model)
    probe = task.x_train[: args.batch]
    base = cost_profile(model, probe, args.repeats)
    acc0 = tl.train.evaluate(model, task)
    rows = [("original", base, acc0, None)]
    for depth in args.depths:
        spec = {"type": "dlr", "depth": depth, "samples": args.samples, "distill_steps": args.distill_steps}
        res = tl.lock(model, spec, retain=task)
        blocks = res.record["locks"][0]["config"].get("blocks")
        err = None if not blocks else max(b["relative_error"] for b in blocks)
        rows.append(
            (
                f"dlr depth {depth}",
                cost_profile(res.model, probe, args.repeats),
                tl.train.evaluate(res.model, task),
                err,
            )
        )
    print(
        f"{type(model).__name__} ({args.model_dir or 'pretrained MiniLM-L6, untrained head'}), batch {args.batch}, "
        f"{torch.get_num_threads()} threads; ratios are locked / original"
    )
    print(
        f"{'model':<14} {'params':>10} {'forward ms':>11} {'fwd+bwd ms':>11} {'saved act MB':>13} "
        f"{'x fwd':>6} {'x f+b':>6} {'x mem':>6} {'accuracy':>9} {'max rel err':>11}"
    )
    for name, c, acc, err in rows:
        r = lambda k: c[k] / base[k]
        print(
            f"{name:<14} {c['params']:>10,} {1e3 * c['forward_s']:>11.1f} {1e3 * c['forward_backward_s']:>11.1f} "
            f"{c['saved_activation_bytes'] / 2**20:>13.1f} {r('forward_s'):>6.2f} {r('forward_backward_s'):>6.2f} "
            f"{r('saved_activation_bytes'):>6.2f} {acc:>9.4f} {'-' if err is None else f'{err:.3f}':>11}"
        )


if __name__ == "__main__":
    main()
