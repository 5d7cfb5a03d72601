"""`dlr`: deep low-rank residual replacement of MLP blocks in the style of DLR-Lock (Sakamoto, Ablin,
Danieli and Cuturi, Apple, 2026), written from the paper's description.

Each transformer MLP block (d -> hidden -> d) is replaced by a DLR-Net of about the same parameter count,

    h_0 = x,  h_{l+1} = h_l + U_l gelu(V_l h_l)  (V_l: d -> r, U_l: r -> d, l < depth),  DLR(x) = h_depth - x

trained by module-wise distillation: each DLR-Net regresses its block's outputs on the block's own inputs
(recorded on the authorized task), independently of the others. The claimed barrier is the asymmetry of
automatic differentiation: inference keeps one activation, but backpropagation stores every one of the depth
layers' activations, so fine-tuning costs more memory and time than the original, and the deep thin
network is harder to optimize. `apply` records the forward / backward time and the activation memory saved
for backward (bytes, counted exactly with saved-tensor hooks) for the original and the locked model.

Blocks found automatically: the built-in transformer's (fc1, act, fc2), BERT's (intermediate, output.dense),
Llama-style `mlp` modules (gate/up/down projections). The certificate is structural (the DLR-Nets are still
there); an adversary can distill each DLR-Net back into a dense MLP or fine-tune anyway.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import check_int, option
from ..models.dlr_net import DLRNet, replace_block
from ..tasks import Task, for_model
from ..train import LoopResult, clone_model
from .base import BaseLock, Certificate, Locked, register_lock, trained


@dataclass
class DLRConfig:
    depth: int = option(8, "residual layers per DLR-Net")
    rank: int | None = option(None, "rank r of each layer (default: the one that matches the block's parameter count)")
    distill_steps: int = option(300, "Adam steps of module-wise distillation per block")
    distill_lr: float = option(1e-3, "distillation learning rate")
    samples: int = option(512, "authorized-task examples whose block inputs are recorded for distillation")

    def __post_init__(self):
        check_int("dlr", "depth", self.depth, 1)
        check_int("dlr", "rank", self.rank, 1, allow_none=True)
        check_int("dlr", "distill_steps", self.distill_steps, 0)


def find_blocks(model: nn.Module) -> list[dict]:
    """MLP blocks as {"name", "first", "last", "dim", "params"}: the DLR-Net takes `first`'s input and
    replaces `last`'s output; modules between become identities."""
    out = []
    for name, m in model.named_modules():
        pre = f"{name}." if name else ""
        if all(hasattr(m, a) for a in ("fc1", "act", "fc2")) and isinstance(m.fc1, nn.Linear):
            out.append(
                {
                    "name": name,
                    "first": pre + "fc1",
                    "last": pre + "fc2",
                    "between": [pre + "act"],
                    "dim": m.fc1.in_features,
                    "params": _count(m.fc1) + _count(m.fc2),
                }
            )
        elif hasattr(m, "intermediate") and hasattr(getattr(m, "output", None), "dense"):
            out.append(
                {
                    "name": name,
                    "first": pre + "intermediate",
                    "last": pre + "output.dense",
                    "between": [],
                    "dim": m.output.dense.out_features,
                    "params": _count(m.intermediate) + _count(m.output.dense),
                }
            )
        elif name.endswith("mlp") and all(hasattr(m, a) for a in ("gate_proj", "up_proj", "down_proj")):
            out.append(
                {
                    "name": name,
                    "first": name,
                    "last": name,
                    "between": [],
                    "dim": m.down_proj.out_features,
                    "params": _count(m),
                }
            )
    return out


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _record(model: nn.Module, blocks: list[dict], x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each block's (input, output) on the batch `x`, flattened to (N, dim)."""
    got: dict[str, list] = {b["name"]: [None, None] for b in blocks}
    handles = []
    for b in blocks:
        handles.append(
            model.get_submodule(b["first"]).register_forward_hook(
                lambda mod, inp, out, b=b: got[b["name"]].__setitem__(0, inp[0].detach())
            )
        )
        handles.append(
            model.get_submodule(b["last"]).register_forward_hook(
                lambda mod, inp, out, b=b: got[b["name"]].__setitem__(1, out.detach())
            )
        )
    try:
        with torch.no_grad():
            model.eval()
            model(x)
    finally:
        for h in handles:
            h.remove()
    return [(got[b["name"]][0].reshape(-1, b["dim"]), got[b["name"]][1].reshape(-1, b["dim"])) for b in blocks]


def distill_block(net: DLRNet, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, seed: int = 0) -> float:
    """Fit `net` to y = block(x) by Adam on the mean squared error; returns the relative error ||e|| / ||y||."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(256, len(x)),), generator=g)
        loss = F.mse_loss(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((net(x) - y).norm() / y.norm().clamp_min(1e-12))


def cost_profile(model: nn.Module, x: torch.Tensor, repeats: int = 3) -> dict:
    """Forward (no grad) and forward + backward wall time (best of `repeats`) on the batch `x`, and the bytes
    of activations autograd saves for backward (exact, from saved-tensor hooks)."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    model.eval()
    fwd, bwd = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            model(x)
        fwd.append(time.perf_counter() - t0)
        saved[0] = 0
        model.zero_grad()
        t0 = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x)
        out.float().pow(2).mean().backward()
        bwd.append(time.perf_counter() - t0)
    model.zero_grad()
    return {
        "forward_s": min(fwd),
        "forward_backward_s": min(bwd),
        "saved_activation_bytes": saved[0],
        "params": _count(model),
    }


@dataclass
class DLRRecord:
    retain_task: str | None = option(None, "the authorized task")
    blocks: list | None = option(None, "the replaced blocks")
    costs: dict | None = option(None, "forward / backward time and saved activation bytes, original vs locked")


@register_lock("dlr", DLRConfig, example={"depth": 2, "distill_steps": 20, "samples": 64})
class DLRLock(BaseLock):
    """Replace MLP blocks by distilled DLR-Nets; certify that they are still in place."""

    record_cls = DLRRecord

    def apply(self, model: nn.Module, retain: Task | None = None, *, progress: bool = False, checkpoint=None) -> Locked:
        if retain is None:
            raise ValueError("dlr: apply needs the retain (authorized) task: its inputs drive the distillation")
        blocks = find_blocks(model)
        if not blocks:
            raise ValueError(
                "dlr: no MLP block found (the built-in transformer, BERT and Llama-style models have them)"
            )
        retain = for_model(retain, model)
        torch.manual_seed(0)
        locked = clone_model(model).cpu()
        x = retain.x_train[: self.cfg.samples]
        pairs = _record(locked, blocks, x)

        def run() -> LoopResult:
            for i, (b, (bx, by)) in enumerate(zip(blocks, pairs, strict=True)):
                rank = self.cfg.rank or max(1, round(b["params"] / (2 * self.cfg.depth * (b["dim"] + 1))))
                net = DLRNet(b["dim"], self.cfg.depth, rank, {k: b[k] for k in ("first", "last", "between")})
                b["rank"] = rank
                b["relative_error"] = distill_block(net, bx, by, self.cfg.distill_steps, self.cfg.distill_lr, seed=i)
                b["dlr_params"] = _count(net)
                replace_block(locked, b, net)
            return LoopResult(steps=self.cfg.distill_steps * len(blocks))

        report = trained(model, locked, retain, self.cfg, run)
        probe = x[:32]
        costs = {
            "original": cost_profile(clone_model(model).cpu(), probe),
            "locked": cost_profile(locked, probe),
            "batch": len(probe),
        }
        return Locked(locked, DLRRecord(retain.name, blocks, costs), report)

    def certify(self, model: nn.Module, record: DLRRecord) -> list[Certificate]:
        if not record.blocks:
            raise ValueError("dlr: no blocks recorded; apply the lock first")
        present = sum(1 for b in record.blocks if isinstance(_get(model, b["first"]), DLRNet))
        c = record.costs or {}
        ratio = {
            k: c["locked"][k] / c["original"][k]
            for k in ("forward_s", "forward_backward_s", "saved_activation_bytes")
            if c and c["original"][k]
        }
        return [
            Certificate(
                lock=self.name,
                invariant="number of recorded MLP blocks still replaced by a DLR-Net",
                measured=float(present),
                required=float(len(record.blocks)),
                relation=">=",
                proof_of_gap=(
                    "DLR-Lock's argument: backpropagation through a depth-L residual chain stores L activations "
                    "where inference keeps one, and the deep thin chain is harder to optimize, so fine-tuning "
                    "costs more than with the original MLPs; an empirical cost claim (ratios in details)"
                ),
                preservation="none: fine-tuning keeps the architecture, but nothing forces an adversary to",
                threat_model="release-time",
                adversary_can_remove=True,
                removal=(
                    "distill each DLR-Net back into a dense two-layer MLP (a module-wise regression on sampled "
                    "inputs, as cheap as the lock's own distillation), or fine-tune only the other layers"
                ),
                method="module types at the recorded block positions; costs measured at lock time on one batch",
                details={"blocks": record.blocks, "costs": c, "locked_over_original": ratio},
            )
        ]


def _get(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None
