"""One training loop shared by base training, locking and attacks, plus evaluation helpers.

The loop owns batching, the optimizer step, a step-LR or linear schedule, a progress bar, and the
non-finite guard: on a NaN/Inf loss it restores the last good snapshot and stops, saying where.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import check_float, check_int, option, to_dict
from ..optimizers import make_optimizer, step_mode
from ..tasks import Task, for_model
from . import distributed
from .checkpoint import Checkpoint, CheckpointError, load_state, rng_state, save_state, set_rng_state
from .precision import PRECISIONS, autocast, check_precision, resolve_precision

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict]]


def check_device(device: str) -> None:
    """ValueError unless `device` is auto, cpu, or a CUDA device this machine has."""
    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be auto, cpu or cuda (cuda:N), got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r}: this torch build sees no CUDA GPU (torch {torch.__version__}); use cpu or auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: there are {torch.cuda.device_count()} CUDA devices")
    elif dev.type != "cpu":
        raise ValueError(f"device must be auto, cpu or cuda (cuda:N), got {device!r}")


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU."""
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def batch_order(n: int, batch_size: int, seed: int, lengths: torch.Tensor | None = None, bucket: int = 0) -> list:
    """The example indices of each minibatch of one epoch, fixed by `seed`: a seeded shuffle cut into batches.

    With `bucket` > 0 and `lengths` (one per example, e.g. tokens), the shuffled order is cut into chunks of
    `bucket` batches; within a chunk the examples are sorted by length before being cut into batches, and the
    chunk's batches are shuffled (seeded), so each batch holds sequences of similar length (less padding) while
    the data order stays random from chunk to chunk. Every example is in exactly one batch either way."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    if bucket <= 0 or lengths is None:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(lengths) != n:
        raise ValueError(f"lengths: {len(lengths)} values for {n} examples")
    out = []
    span = bucket * batch_size
    for c in range(0, n, span):
        chunk = order[c : c + span]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        parts = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        out += [parts[int(j)] for j in torch.randperm(len(parts), generator=g)]
    return out


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    seed: int,
    lengths: torch.Tensor | None = None,
    bucket: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled minibatches of (x, y); the order is fixed by `seed` (`bucket`, `lengths`: see `batch_order`)."""
    for idx in batch_order(len(y), batch_size, seed, lengths, bucket):
        yield x[idx], y[idx]


def token_lengths(x: torch.Tensor) -> torch.Tensor | None:
    """Tokens per example of a tokenized text split (N, 3, L): the attention mask's sum; None for other inputs."""
    if x.is_floating_point() or x.dim() != 3 or x.shape[1] != 3:
        return None
    return x[:, 1].sum(dim=-1)


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
    return F.cross_entropy(model(x), y), {}


def _optimizer_names() -> list[str]:
    from ..optimizers import OPTIMIZERS

    return OPTIMIZERS.names()


SCHEDULES = ("step", "linear")


def linear_factor(step: int, total: int, warmup: int) -> float:
    """The linear schedule's LR multiplier before optimizer step `step` (0-based) of `total`: step / warmup
    while warming up, then (total - step) / (total - warmup), which reaches 1 / (total - warmup) at the last
    step (transformers' `get_linear_schedule_with_warmup`)."""
    if step < warmup:
        return step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


@dataclass
class LoopConfig:
    """How to run the training loop; base training, locks, attacks and studies nest one of these."""

    optimizer: str = option("adam", "optimizer by name", choices=_optimizer_names)
    lr: float = option(1e-3, "learning rate")
    epochs: int = option(1, "passes over the training split")
    batch_size: int = option(64, "minibatch size")
    seed: int = option(0, "random seed (data order, fresh heads)")
    max_steps: int | None = option(None, "stop after this many optimizer steps in all (default: every epoch)")
    lr_gamma: float | None = option(
        None, "step-LR decay per epoch (the paper: 0.7; the step schedule only); unset or 0: a constant rate"
    )
    schedule: str = option(
        "step",
        "step: --lr-gamma per epoch (constant without it); linear: warm up over "
        "--warmup-steps, then decay linearly to 0 at the last step (the paper's text "
        "setting, with AdamW)",
        choices=lambda: SCHEDULES,
    )
    warmup_steps: int = option(0, "linear schedule: steps of linear warm-up from 0 (the paper: none)")
    weight_decay: float | None = option(None, "weight decay (default: the optimizer's own)")
    momentum: float | None = option(None, "SGD momentum (default 0.9)")
    device: str = option("auto", "cpu, cuda, or auto (CUDA when present)")
    precision: str = option(
        "fp32",
        "fp32, or bf16 autocast around the forward pass and loss (weights, gradients, evaluation and the "
        "spectral term stay fp32); auto: bf16 for a transformer on a device with native bf16 (a CUDA GPU that "
        "supports it; a CPU with avx512_bf16 or AMX), and for a CNN where bf16 convolutions are fast (CUDA, or "
        "a CPU with AMX: without AMX they were slower than fp32 here), else fp32",
        choices=lambda: PRECISIONS,
    )
    snapshot_every: int = option(200, "steps between last-good-state snapshots (non-finite guard)", cli=False)
    length_buckets: int = option(
        0,
        "text only: batches of similar length, sorted within chunks of this many batches (fewer padded tokens "
        "per step: 0.22x the step time of padding to 128 on rotten-tomatoes, 0.33x without buckets; another "
        "data order than the default 0); ignored for inputs that are not tokens",
        omit_default=True,
    )

    def __post_init__(self):
        check_int("loop", "epochs", self.epochs, 1)
        check_int("loop", "batch_size", self.batch_size, 1)
        check_int("loop", "seed", self.seed, 0)
        check_int("loop", "max_steps", self.max_steps, 1, allow_none=True)
        check_int("loop", "snapshot_every", self.snapshot_every, 1)
        check_float("loop", "lr", self.lr, 0.0, open_low=True)
        check_float("loop", "lr_gamma", self.lr_gamma, 0.0, 1.0, allow_none=True)
        check_int("loop", "warmup_steps", self.warmup_steps, 0)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"loop: schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        check_float("loop", "weight_decay", self.weight_decay, 0.0, allow_none=True)
        check_float("loop", "momentum", self.momentum, 0.0, 1.0, allow_none=True)
        check_device(self.device)
        check_precision(self.precision)
        check_int("loop", "length_buckets", self.length_buckets, 0)

    def to_dict(self) -> dict:
        return to_dict(self)

    def steps_per_epoch(self, n_train: int) -> int:
        return math.ceil(n_train / self.batch_size)

    def total_steps(self, n_train: int) -> int:
        """The optimizer steps `fit` runs on `n_train` training examples: every epoch, cut at max_steps."""
        every = self.steps_per_epoch(n_train) * self.epochs
        return every if self.max_steps is None else min(self.max_steps, every)


@dataclass
class LoopResult:
    steps: int = 0
    losses: list[float] = field(default_factory=list)  # one per step
    epochs: list[dict] = field(default_factory=list)  # whatever on_epoch returned, per epoch
    stopped: str | None = None  # why the loop stopped early (non-finite loss, callback), if it did


def _optimizer(model: nn.Module, cfg: LoopConfig) -> torch.optim.Optimizer:
    opts = {}
    if cfg.weight_decay is not None:
        opts["weight_decay"] = cfg.weight_decay
    if cfg.momentum is not None:
        opts["momentum"] = cfg.momentum
    params = [p for p in model.parameters() if p.requires_grad]
    return make_optimizer(cfg.optimizer, params, cfg.lr, model=model, **opts)


def _step(opt, mode: str, model, loss_fn: LossFn, xb, yb, precision: str = "fp32") -> tuple[float, dict, bool]:
    """One optimizer step. Returns (loss value before the step, extras, ok); ok=False on a
    non-finite loss, in which case no update was made (except inside an L-BFGS closure).
    `precision` ('fp32' or 'bf16'): bf16 runs the forward pass and the loss under autocast."""
    if mode == "closure":
        box: dict = {}

        def closure():
            opt.zero_grad(set_to_none=True)
            with autocast(precision, xb.device):
                loss, extras = loss_fn(model, xb, yb)
            box.setdefault("first", (float(loss.detach()), extras))
            if math.isfinite(float(loss.detach())):
                loss.backward()
            return loss

        opt.step(closure)
        value, extras = box["first"]
        finite = math.isfinite(value) and all(torch.isfinite(p).all() for p in model.parameters())
        return value, extras, finite
    with autocast(precision, xb.device):
        loss, extras = loss_fn(model, xb, yb)
    value, finite = distributed.all_finite(float(loss.detach()), loss.device)  # one decision on every rank
    if not finite:
        return value, extras, False
    opt.zero_grad(set_to_none=True)
    try:
        if mode == "hessian":
            with warnings.catch_warnings():  # the grad<->param reference cycle is broken below
                warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
                loss.backward(create_graph=True)
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            loss.backward()
            if distributed.world_size() > 1 and not distributed.is_fsdp(model):  # FSDP reduce-scattered them
                distributed.average_gradients([p for g in opt.param_groups for p in g["params"]])
            opt.step()
    except RuntimeError as e:  # e.g. an lr so large that lr * grad overflows the dtype: a divergence
        if "overflow" not in str(e):
            raise
        return math.inf, extras, False
    return value, extras, True


@dataclass
class LoopHooks:
    """What a caller plugs into `fit`: per-step and per-epoch callbacks, and a resumable checkpoint."""

    on_step: Callable[[int, float, dict], bool | None] | None = None  # (step, loss, extras); True stops
    on_epoch: Callable[[int], dict] | None = None  # (epoch) -> a dict to log
    checkpoint: Checkpoint | None = None  # write the loop's state every checkpoint.every steps; resume from it


def fit(
    model: nn.Module,
    task: Task,
    cfg: LoopConfig,
    loss_fn: LossFn = cross_entropy,
    hooks: LoopHooks | None = None,
    desc: str = "train",
    progress: bool = True,
    length_buckets: int = 0,
) -> LoopResult:
    """Minimise `loss_fn` over `task`'s training split. Returns the per-step losses and epoch logs.

    `length_buckets` > 0 (tokenized text only): batches of similar length, sorted within chunks of that many
    batches (see `batch_order`); fewer padded tokens per step, another data order than the default (0). Default:
    `cfg.length_buckets` (the `--length-buckets` flag).

    `hooks.on_step(step, loss, extras)` may return True to stop; `hooks.on_epoch(epoch)` returns a
    dict to log. A non-finite loss restores the last good snapshot and stops with `result.stopped` set.
    With `hooks.checkpoint`, the whole loop state is written every `checkpoint.every` steps, and a
    run started with `checkpoint.resume` continues from it to the same final weights.
    """
    hooks = hooks or LoopHooks()
    ck = hooks.checkpoint
    task = for_model(task, model)  # text tokenized for a text model, images fitted to an image model
    device = resolve_device(cfg.device)
    model.to(device).train()
    opt = _optimizer(model, cfg)
    mode = step_mode(opt)
    precision = resolve_precision(cfg.precision, model, device)
    if cfg.precision == "auto":
        logger.debug("%s: precision auto -> %s on %s", desc, precision, device)
    if distributed.world_size() > 1:  # launched by torchrun: every rank trains on a shard of each minibatch
        if mode != "plain":
            raise ValueError(
                f"optimizer {cfg.optimizer!r} ({mode} steps) is not supported data-parallel; run it in one process"
            )
        if distributed.is_fsdp(model):
            if ck is not None:
                raise ValueError("checkpoints of an FSDP-sharded run are not supported; drop --checkpoint-every")
        else:
            distributed.broadcast_parameters(model)
        progress = progress and distributed.is_main()
    x, y = task.x_train, task.y_train
    check_int("fit", "length_buckets", length_buckets, 0)
    length_buckets = length_buckets or cfg.length_buckets
    lengths = token_lengths(x) if length_buckets else None
    total = cfg.total_steps(len(y))
    per_step = cfg.schedule == "linear"  # the linear schedule moves every step; step-LR every epoch
    if per_step:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: linear_factor(s, total, cfg.warmup_steps))
    else:
        sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=cfg.lr_gamma) if cfg.lr_gamma else None
    res = LoopResult()
    good, good_step = _snapshot(model), 0
    start_epoch, skip = 0, 0
    if ck is not None and ck.resume and ck.path.is_file():
        state = load_state(ck.path)
        saved = state.get("config")
        if isinstance(saved, dict):  # written before the precision option: those runs were fp32
            saved = {"precision": "fp32", **saved}
        if saved != to_dict(cfg) or state.get("total") != total:
            raise CheckpointError(
                f"{ck.path} was written by a run with another loop configuration; delete it or "
                f"drop --resume to start afresh"
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None:
            sched.load_state_dict(state["scheduler"])
        res.steps, res.losses, res.epochs = state["steps"], list(state["losses"]), list(state["epochs"])
        good, good_step = state["good"], state["good_step"]
        start_epoch, skip = state["epoch"], state["in_epoch"]
        if ck.state is not None:
            ck.state.load_state_dict(state["extra"])
        set_rng_state(state["rng"])
        logger.info("resumed %s from %s at step %d", desc, ck.path, res.steps)

    def write(epoch: int, in_epoch: int) -> None:
        try:
            save_state(
                ck.path,
                {
                    "config": to_dict(cfg),
                    "total": total,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "steps": res.steps,
                    "losses": res.losses,
                    "epochs": res.epochs,
                    "good": good,
                    "good_step": good_step,
                    "epoch": epoch,
                    "in_epoch": in_epoch,
                    "rng": rng_state(),
                    "extra": ck.state.state_dict() if ck.state else None,
                },
                identity=ck.identity,
            )
        except TypeError as e:
            raise CheckpointError(f"optimizer {cfg.optimizer!r}: its state cannot be checkpointed ({e})") from None

    bar = tqdm(total=total, initial=res.steps, desc=desc, disable=None if progress else True, leave=False)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            epoch_batches = batches(x, y, cfg.batch_size, cfg.seed * 100_003 + epoch, lengths, length_buckets)
            for i, (xb, yb) in enumerate(epoch_batches):
                if epoch == start_epoch and i < skip:
                    continue  # done before the checkpoint
                if res.steps >= total:
                    break
                due = res.steps % cfg.snapshot_every == 0 and res.steps > 0
                candidate = _snapshot(model) if due else None  # good once its loss proves finite
                xb, yb = distributed.shard(xb, yb)
                value, extras, ok = _step(opt, mode, model, loss_fn, xb.to(device), yb.to(device), precision)
                if ok and candidate is not None:
                    good, good_step = candidate, res.steps
                if not ok:
                    model.load_state_dict(good)
                    res.stopped = (
                        f"non-finite loss ({value}) at epoch {epoch + 1}, step {res.steps + 1}; "
                        f"restored the last good state (from step {good_step})"
                    )
                    return res
                res.steps += 1
                res.losses.append(value)
                if per_step:
                    sched.step()
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4g}", refresh=False)
                if hooks.on_step is not None and hooks.on_step(res.steps, value, extras):
                    res.stopped = f"stopped by callback at step {res.steps}"
                    break
                if ck is not None and res.steps % ck.every == 0 and distributed.is_main():
                    write(epoch, i + 1)
            if sched is not None and not per_step:
                sched.step()
            log = {"epoch": epoch + 1, "step": res.steps}
            if hooks.on_epoch is not None:
                log.update(hooks.on_epoch(epoch + 1))
            res.epochs.append(log)
            if res.stopped or res.steps >= total:
                break
    finally:
        bar.close()
    return res


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy, detached from any autograd history."""
    return copy.deepcopy(model)


def reinitialized(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of `model` with fresh weights: every submodule's own `reset_parameters` (torch's default
    initialization for Linear, Conv, Embedding, norms), under `seed`. Raises ValueError when no module
    can be reset."""
    fresh = clone_model(model)
    torch.manual_seed(seed)
    n = 0
    for m in fresh.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset) and any(True for _ in m.parameters(recurse=False)):
            reset()
            n += 1
    if n == 0:
        raise ValueError(
            f"{type(model).__name__}: no submodule has reset_parameters; cannot build a from-scratch baseline"
        )
    return fresh
