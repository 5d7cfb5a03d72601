"""Training step time in fp32 and under bf16 autocast (`--precision fp32|bf16`), as ratios, in one run.

Each model takes the training loop's own step (`trainlock.train.loop._step`: forward and loss under the
precision's autocast, backward, optimizer step) on one fixed batch, fp32 and bf16 in alternating blocks
(so a noisy, shared machine slows both alike); the median step of each is reported, and the ratio
fp32 / bf16 (> 1: bf16 is faster). Models:

- `cnn`: the built-in small CNN (channels 16, 32; hidden 128) on 8x8 digits-sized images, batch 64, Adam;
- `minilm-l6`: MiniLM-L6 with a fresh head, batch 16 x 64 random tokens, AdamW (when its package is installed);
- `effnet-lite0`: EfficientNet-Lite0 at 96 px on 32x32 RGB inputs, batch 32, Adam (when installed).

    python benchmarks/bench_precision.py [--quick] [--blocks 4] [--steps 3]

`--quick`: the small CNN only. Also prints whether `--precision auto` picks bf16 for each model here.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import trainlock as tl
from trainlock.optimizers import make_optimizer, step_mode
from trainlock.train.loop import _step, cross_entropy
from trainlock.train.precision import resolve_precision


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the small CNN only")
    ap.add_argument("--blocks", type=int, default=4, help="alternating fp32/bf16 blocks")
    ap.add_argument("--steps", type=int, default=3, help="steps per block")
    args = ap.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"avx512_bf16 {torch.cpu._is_avx512_bf16_supported()}, amx {torch.cpu._is_amx_tile_supported()}"
    )
    names = ["cnn"] if args.quick else list(MODELS)
    for name in names:
        bench(name, MODELS[name], args.blocks, args.steps if name != "cnn" else max(args.steps, 20))


if __name__ == "__main__":
    main()
