"""Training step time in fp32 and under bf16 autocast (`--precision fp32|bf16`), as ratios, in one run.

Each model takes the training loop's own step (`trainlock.train.loop._step`: forward and loss under the
precision's autocast, backward, optimizer step) on one fixed batch, fp32 and bf16 in alternating blocks
(so a noisy, shared machine slows both alike); the median step of each is reported, and the ratio
fp32 / bf16 (> 1: bf16 is faster). Models:

- `cnn`: the built-in small CNN (channels 16, 32; hidden 128) on 8x8 digits-sized images, batch 64, Adam;
- `minilm-l6`: MiniLM-L6 with a fresh head, batch 16 x 64 random tokens, AdamW (when its package is installed);
- `effnet-lite0`: EfficientNet-Lite0 at 96 px on 32x32 RGB inputs, batch 32, Adam (when installed).

Then accuracy (`--accuracy`): each demo's first stage (fine-tuning the pretrained model on its authorized task,
the demo's own sizes, recipe and seed: `paper/demo_effnet.py`, `paper/demo_text.py`) once in fp32 and once under
bf16 autocast, and the test accuracies side by side. Goal: bf16 within 1 point of fp32 (not measured on a CPU without
native bf16, where it is emulated: the line says so). `--accuracy quick` uses
`make quick`'s sizes, `none` skips it.

    python benchmarks/bench_precision.py [--quick] [--blocks 4] [--steps 3] [--accuracy full|quick|none]

`--quick`: the small CNN only (and no accuracy part). Also prints whether `--precision auto` picks bf16 for each
model here.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from goals import report, unmeasured

import trainlock as tl
from trainlock.optimizers import make_optimizer, step_mode
from trainlock.train.loop import _step, cross_entropy
from trainlock.train.precision import bf16_supported, resolve_precision


def small_cnn():
    torch.manual_seed(0)
    model = tl.models.build("cnn", input_shape=(1, 8, 8), num_classes=10)
    g = torch.Generator().manual_seed(0)
    return model, torch.rand(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g), "adam", 1e-3


def minilm():
    torch.manual_seed(0)
    model = tl.models.build("minilm-l6", num_classes=2, max_length=64)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, min(int(model.model.config.vocab_size), 30000), (16, 64), generator=g)
    x = torch.stack([ids, torch.ones_like(ids), torch.zeros_like(ids)], dim=1)  # (B, 3, L): ids, mask, types
    return model, x, torch.randint(0, 2, (16,), generator=g), "adamw", 1e-4


def effnet():
    torch.manual_seed(0)
    model = tl.models.build("effnet-lite0", input_shape=(3, 32, 32), num_classes=10, size=96)
    g = torch.Generator().manual_seed(0)
    return model, torch.rand(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g), "adam", 1e-3


MODELS = {"cnn": small_cnn, "minilm-l6": minilm, "effnet-lite0": effnet}


def time_steps(model, x, y, opt_name, lr, precision, steps):
    opt = make_optimizer(opt_name, [p for p in model.parameters() if p.requires_grad], lr, model=model)
    mode = step_mode(opt)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        _step(opt, mode, model, cross_entropy, x, y, precision)
        times.append(time.perf_counter() - t)
    return times


def bench(name, make, blocks, steps):
    try:
        model, x, y, opt_name, lr = make()
    except (ValueError, ImportError, OSError) as e:
        print(f"{name:14s} skipped: {str(e).splitlines()[0][:100]}")
        return
    model.train()
    for precision in ("fp32", "bf16"):  # warm-up: allocator, oneDNN kernels, optimizer state
        time_steps(model, x, y, opt_name, lr, precision, 1)
    got = {"fp32": [], "bf16": []}
    for b in range(blocks):
        order = ("fp32", "bf16") if b % 2 == 0 else ("bf16", "fp32")
        for precision in order:
            got[precision] += time_steps(model, x, y, opt_name, lr, precision, steps)
    f, h = statistics.median(got["fp32"]) * 1e3, statistics.median(got["bf16"]) * 1e3
    auto = resolve_precision("auto", model, torch.device("cpu"))
    print(f"{name:14s} fp32 {f:8.1f} ms/step   bf16 {h:8.1f} ms/step   fp32/bf16 {f / h:5.2f}x   auto -> {auto}")


def demo_accuracy(name: str, quick: bool) -> None:
    """Test accuracy after the demo's fine-tuning of `name` (effnet-lite0 or minilm-l6), fp32 then bf16."""
    from trainlock import models, tasks
    from trainlock.tasks import for_model
    from trainlock.train import LoopConfig, evaluate, fit

    if name == "effnet-lite0":
        from trainlock.paper.demo_effnet import AUTHORIZED, vision_plan

        p = vision_plan(quick)
        task = tasks.get(AUTHORIZED).subset(p.n_train, p.n_test)
        kw = {"input_shape": task.input_shape, "num_classes": task.num_classes, "size": p.size}
        loop = {"optimizer": "adam", "lr": 1e-3, "epochs": 1000, "schedule": "linear"}
    else:
        from trainlock.paper.demo_text import AUTHORIZED, text_plan

        p = text_plan(quick)
        task = tasks.get(AUTHORIZED).subset(p.n_train, p.n_test)
        kw = {"num_classes": task.num_classes, "max_length": p.max_length}
        loop = {"optimizer": "adamw", "lr": 5e-5, "epochs": 100, "weight_decay": 0.01, "schedule": "linear"}
    acc, secs = {}, {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        try:
            model = models.build(name, **kw)
        except (ValueError, ImportError, OSError) as e:
            print(f"{name:14s} accuracy skipped: {str(e).splitlines()[0][:100]}")
            return
        t = time.perf_counter()
        cfg = LoopConfig(max_steps=p.train_steps, batch_size=p.batch_size, device="cpu", precision=precision, **loop)
        fit(model, for_model(task, model), cfg, progress=False)
        secs[precision] = time.perf_counter() - t
        acc[precision] = evaluate(model, for_model(task, model))
    diff = 100 * (acc["bf16"] - acc["fp32"])
    n_test = len(getattr(task, "labels_test", None) or task.y_test)
    print(
        f"{name:14s} {AUTHORIZED} ({p.train_steps} steps, {n_test} test): fp32 {acc['fp32']:.4f} "
        f"({secs['fp32']:.0f} s)   bf16 {acc['bf16']:.4f} ({secs['bf16']:.0f} s)   bf16 - fp32 {diff:+.1f} points"
    )
    report(f"{name} demo fine-tuning: bf16 - fp32 test accuracy, absolute", abs(diff), "<=", 1.0, unit=" points")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the small CNN only")
    ap.add_argument("--blocks", type=int, default=4, help="alternating fp32/bf16 blocks")
    ap.add_argument("--steps", type=int, default=3, help="steps per block")
    ap.add_argument(
        "--accuracy",
        choices=("full", "quick", "none"),
        default="full",
        help="the demos' fine-tuning in fp32 and bf16: their default sizes, `make quick`'s, or not at all",
    )
    args = ap.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"avx512_bf16 {torch.cpu._is_avx512_bf16_supported()}, amx {torch.cpu._is_amx_tile_supported()}"
    )
    native = bf16_supported(torch.device("cpu"))
    names = ["cnn"] if args.quick else list(MODELS)
    for name in names:
        blocks, steps = args.blocks, args.steps if name != "cnn" else max(args.steps, 20)
        if not native and name != "cnn":  # emulated bf16: 13-18x slower per step; one block shows the ratio
            blocks, steps = 1, 1
        bench(name, MODELS[name], blocks, steps)
    if args.quick or args.accuracy == "none":
        return
    for name in ("effnet-lite0", "minilm-l6"):
        if native:
            demo_accuracy(name, args.accuracy == "quick")
        else:  # the bf16 fine-tuning alone would take 25-45 min here
            why = "this CPU has no native bf16 (no avx512_bf16 or AMX): bf16 is emulated, 13-18x slower than fp32"
            print(f"{name:14s} accuracy skipped: {why}")
            unmeasured(f"{name} demo fine-tuning: bf16 - fp32 test accuracy, absolute", "<=", 1.0, why, unit=" points")


if __name__ == "__main__":
    main()
