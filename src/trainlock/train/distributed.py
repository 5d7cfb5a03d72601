"""Data parallelism for `fit`: run any training command under torchrun and every rank trains on a shard.

    torchrun --nproc_per_node 2 -m trainlock lock runs/base --out runs/locked ...

`init_from_env()` (the CLI calls it) joins the process group torchrun describes in the environment: gloo
on CPU, nccl on CUDA (each rank on cuda:LOCAL_RANK). Inside `fit`, every rank draws the same global
minibatch (same seed), takes its contiguous shard (`shard`), computes its loss and gradients, and the
gradients are averaged across ranks with one coalesced all-reduce (`average_gradients`) before the step.
With shards of equal size (a global batch divisible by the world size) the averaged gradient is the
single-process gradient of the global batch, so a run matches a single-process run to float rounding.

This is what torch's DistributedDataParallel does, written out: the lock losses walk the model's own
modules and parameter names (SpecDef's spectral term, per-layer selections), which DDP's wrapper would
rename, and the spectral term must not be sharded. It is computed redundantly on every rank: the weights
are identical on every rank after each averaged step (rank 0's are broadcast at the start), and the power
iteration is a deterministic function of them, so all ranks hold the same spectral term and the same
power-iteration state with no communication; its gradient is identical on every rank, and averaging
leaves it unchanged. Outputs (checkpoints, saved models) are written by rank 0 only (`is_main`).

Models that do not fit one device: `trainlock lock --fsdp` under torchrun shards a working copy's parameters
with FSDP2 (`fully_shard` on every module that owns parameters, then the root). FSDP gathers each layer for
its forward and reduce-scatters (averages) the gradients; the spectral term reads the unsharded weight with
DTensor's differentiable `full_tensor()`, so its gradient returns to each rank's shard (checked against a
single process to 1e-8). After the loop the full state dict is gathered into the unsharded model. `fit`
accepts a model already sharded so (`is_fsdp`) and then leaves the gradient averaging to FSDP.
"""

from __future__ import annotations

import logging
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn

logger = logging.getLogger(__name__)
COMM = {"seconds": 0.0, "calls": 0}  # wall time spent in this process's all-reduces (the benchmarks read it)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0 (and in any single-process run): the rank that writes outputs."""
    return rank() == 0


def init_from_env() -> bool:
    """Join the process group torchrun's environment describes (WORLD_SIZE > 1); False when not launched so."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        logger.info("data parallel: rank %d of %d (%s)", rank(), world_size(), dist.get_backend())
    return True


def shutdown() -> None:
    """Leave the process group (after the command; a no-op when not in one)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # rank 0 may still be writing; nobody leaves before everyone is done
        dist.destroy_process_group()


def fsdp_requested() -> bool:
    """True under torchrun with TRAINLOCK_FSDP=1 (`trainlock lock --fsdp`): shard the parameters with FSDP2."""
    return world_size() > 1 and os.environ.get("TRAINLOCK_FSDP") == "1"


def is_fsdp(model: nn.Module) -> bool:
    """Whether `model` was sharded with FSDP2's fully_shard (its gradients are then reduce-scattered by FSDP)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return isinstance(model, FSDPModule)


def fully_shard_model(model: nn.Module) -> nn.Module:
    """Shard `model` in place with FSDP2: every module that owns parameters, then the root (rank 0's values,
    broadcast first, are what gets sharded). Returns `model`."""
    from torch.distributed.fsdp import fully_shard

    broadcast_parameters(model)
    for m in list(model.modules()):
        if m is not model and any(True for _ in m.parameters(recurse=False)):
            fully_shard(m)
    fully_shard(model)
    return model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict of an FSDP2 model, on CPU, on every rank (a collective: every rank calls it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))  # on every rank (cpu_offload
    return {k: v.detach().cpu() for k, v in full.items()}  # would keep it on rank 0 only)


def shard(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's contiguous share of a global minibatch (all of it in a single-process run)."""
    n = world_size()
    if n == 1:
        return xb, yb
    if len(yb) < n:
        raise ValueError(f"a minibatch of {len(yb)} cannot be split over {n} ranks; use a larger --batch-size")
    return xb.tensor_split(n)[rank()], yb.tensor_split(n)[rank()]


def all_finite(value: float, device: torch.device) -> tuple[float, bool]:
    """(the mean of `value` over ranks, whether it is finite on every rank): every rank takes the same
    decision on a non-finite loss, so none is left waiting in an all-reduce."""
    if world_size() == 1:
        return value, math.isfinite(value)
    t = torch.tensor([value], dtype=torch.float64, device=device)
    t0 = time.perf_counter()
    dist.all_reduce(t)
    COMM["seconds"] += time.perf_counter() - t0
    COMM["calls"] += 1
    mean = float(t) / world_size()
    return mean, bool(torch.isfinite(t).all())


def broadcast_parameters(model: nn.Module) -> None:
    """Every rank starts from rank 0's parameters and buffers."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(params: list[torch.Tensor]) -> None:
    """Average the gradients of `params` over ranks, in one coalesced all-reduce (a missing gradient counts as
    zero, so every rank sends the same shapes)."""
    n = world_size()
    if n == 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    t0 = time.perf_counter()
    dist.all_reduce(flat)
    COMM["seconds"] += time.perf_counter() - t0
    COMM["calls"] += 1
    flat /= n
    offset = 0
    for p, g in zip(params, grads, strict=False):
        k = g.numel()
        p.grad = flat[offset : offset + k].view_as(p).clone()
        offset += k
