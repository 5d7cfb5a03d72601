"""Backward-locking diagnostics: per-block Jacobian spectra, gradient norms, and the chain-rule bound.

Blocks. A model is split into the modules its forward pass calls in order, found by a forward-hook
trace of its direct children; a direct child that is an nn.Sequential (MLP `body`, CNN `features`,
ResNet `stem`/`stages`, Transformer `layers`) is expanded, recursively, into its own children.
Children that are never called are dropped. Operations between blocks that are not modules
(flatten, tokenize, `+ pos`, token mean) are "glue": their Jacobians are measured separately for
the bound (`glue_norms`), so the bound stays valid for any glue.

Skip connections. A block is reported `skip=True` when its class is a known residual block
(`BasicBlock`, `Bottleneck`, `EncoderLayer`, `TransformerEncoderLayer`, `TransformerDecoderLayer`,
or any class name containing "Residual"), or when it has a `shortcut` / `downsample` submodule or a
truthy `residual` attribute. This is a naming rule, not a functional test: a residual block with
another name and none of those attributes is reported skip=False.

Jacobians are per sample: J_l(x_i) = d out_l(x_i) / d in_l(x_i), flattened to (out_dim, in_dim).
The model runs in eval mode, where every built-in block acts on each sample independently
(BatchNorm uses running statistics), so the batch Jacobian is block diagonal and one batched JVP /
VJP (torch.func) advances every sample's power iteration at once, each vector normalised per sample.
Table values are means over the samples (`*_max` columns give the worst sample).

- jacobian_norm: sigma_max(J_l), power iteration on J^T J through J v / J^T u products (no dense
  Jacobian); both it and the top Lanczos Ritz value (below) are lower bounds on sigma_max, and the
  larger is reported (power iteration alone stalls when sigma_1 and sigma_2 are within ~0.3%).
- sigma_min: the smallest of the min(out_dim, in_dim) singular values (zero directions of the larger
  space are not counted), by Lanczos with full reorthogonalisation on J J^T (out_dim <= in_dim) or
  J^T J, matrix-free; with `lanczos` steps >= that dimension it is exact (to float32), otherwise it
  is a Ritz value: an upper bound on the true sigma_min.
- rank: numerical rank (singular values > max(m, n) * eps * sigma_max) of the dense Jacobian of the
  first sample when min(out_dim, in_dim) <= `dense_max` and out_dim * in_dim <= 2e7
  (`rank_method="dense"`); else the number of nonzero Lanczos Ritz values, a lower bound capped
  at the number of steps (`rank_method="lanczos-lower-bound"`).
- condition = sigma_max / sigma_min (inf when sigma_min is 0); severity = 1 - sigma_min / sigma_max.
  Correction: the note defines severity from the singular values of grad_{H_l} L . J_l, but for a
  scalar loss that is a 1 x n row vector with a single singular value, so its ratio is always 1 and
  the severity always 0. The singular values of J_l itself are used instead.
- grad_norm: ||d L / d theta_l|| for the block's own parameters, L the mean cross-entropy on the batch.

The bottleneck bound. The note states ||grad_theta1 L|| <= prod_{l=1}^{L-1} ||J_l|| . ||grad_{H_L} L||.
That is dimensionally wrong: it lacks the first block's parameter Jacobian dH_1/dtheta_1 (and its
product runs over the wrong blocks: J_1 maps the input, which theta_1's gradient never crosses).
The chain rule gives, per sample, with G_l the glue Jacobian between block l-1's output and block
l's input (the identity for a plain Sequential),

    ||dL/dtheta_1|| <= ||dH_1/dtheta_1|| . prod_{l>=2} (||G_l|| . ||J_l||) . ||dL/dH_L||,

where block 1 is the first block that has parameters and H_L the last block's output. `bound`
reports both sides measured per sample and whether lhs <= rhs holds (to a 1e-4 relative slack for
the power-iteration error). It assumes the blocks form a chain: a later block reading an earlier
block's output directly, skipping the chain, is not covered (the check then may fail, and says so).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, jvp, vjp, vmap

from ..atomic import writing_file
from ..tasks import for_model

RESIDUAL_CLASSES = {"BasicBlock", "Bottleneck", "EncoderLayer", "TransformerEncoderLayer", "TransformerDecoderLayer"}
EPS32 = torch.finfo(torch.float32).eps
MEMORY = 5e8  # bytes for a Lanczos basis; fewer steps on large blocks


def is_residual(module: nn.Module) -> bool:
    """The skip-connection rule of the module docstring (class name or shortcut attributes)."""
    name = type(module).__name__
    if name in RESIDUAL_CLASSES or "residual" in name.lower():
        return True
    if any(isinstance(getattr(module, a, None), nn.Module) for a in ("shortcut", "downsample")):
        return True
    return getattr(module, "residual", False) is True


def _candidates(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    out = []
    for name, child in module.named_children():
        seq = isinstance(child, nn.Sequential) and len(child) > 0
        out += _candidates(child, f"{prefix}{name}.") if seq else [(f"{prefix}{name}", child)]
    return out


def trace_blocks(model: nn.Module, x: torch.Tensor) -> tuple[list[dict], torch.Tensor]:
    """Run `model(x)` (grad enabled); return (blocks in call order, the model output).

    Each entry: name, module, skip, input, output (tensors of that forward, in the autograd graph).
    A module called more than once keeps its first call only.
    """
    records: dict[int, dict] = {}
    order: list[int] = []
    handles = []
    for name, mod in _candidates(model):

        def hook(m, inputs, output, name=name):
            if (
                id(m) in records
                or not inputs
                or not isinstance(inputs[0], torch.Tensor)
                or not isinstance(output, torch.Tensor)
            ):
                return
            records[id(m)] = {"name": name, "module": m, "skip": is_residual(m), "input": inputs[0], "output": output}
            order.append(id(m))

        handles.append(mod.register_forward_hook(hook))
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    blocks = [records[i] for i in order]
    if not blocks:
        raise ValueError("no block of the model was called with a tensor input and output")
    return blocks, logits


def _bnorm(a: torch.Tensor) -> torch.Tensor:
    return a.flatten(1).norm(dim=1)


def _unit(a: torch.Tensor) -> torch.Tensor:
    return a / _bnorm(a).clamp_min(1e-30).view(-1, *([1] * (a.dim() - 1)))


def power_norm(jv, jtv, v0: torch.Tensor, iters: int = 300, tol: float = 1e-7) -> torch.Tensor:
    """Per-sample sigma_max of a block-diagonal batched operator J given jv = J v and jtv = J^T u.

    v0: (B, *in). Power iteration on J^T J; returns (B,) estimates ||J v_k|| (lower bounds converging
    to sigma_max), stopping when every sample's estimate changes by less than `tol` relatively.
    """
    v, prev = _unit(v0), None
    for _ in range(iters):
        u = jv(v)
        s, v = _bnorm(u), _unit(jtv(u))
        if prev is not None and bool(((s - prev).abs() <= tol * s.clamp_min(1e-30)).all()):
            break
        prev = s
    return _bnorm(jv(v))


def _orth_against(Q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    for _ in range(2):  # twice is enough (Kahan)
        w = w - torch.einsum("bk,bkd->bd", torch.einsum("bkd,bd->bk", Q, w), Q)
    return w


def lanczos_eigs(op, q0: torch.Tensor, steps: int) -> torch.Tensor:
    """Ritz values (B, k) of a batched symmetric PSD operator by Lanczos, full reorthogonalisation.

    k = min(steps, dim); with k == dim the values are the operator's eigenvalues (to rounding).
    On breakdown (an invariant subspace) a sample continues from a fresh orthogonalised random vector.
    """
    B, shape = q0.shape[0], q0.shape[1:]
    d = q0[0].numel()
    k = min(steps, d, max(8, int(MEMORY // (8 * B * d))))  # the basis Q is B * k * d doubles
    Q = torch.zeros(B, k, d, dtype=torch.float64, device=q0.device)
    q = _unit(q0.flatten(1).double())
    alphas, betas = [], []
    beta_prev, q_prev = torch.zeros(B, dtype=torch.float64, device=q0.device), torch.zeros_like(q)
    for j in range(k):
        Q[:, j] = q
        w = op(q.float().view(B, *shape)).flatten(1).double()
        a = (w * q).sum(1)
        w = w - a[:, None] * q - beta_prev[:, None] * q_prev
        w = _orth_against(Q[:, : j + 1], w)
        b = w.norm(dim=1)
        alphas.append(a)
        if j == k - 1:
            break
        dead = b <= 1e-10 * a.abs().clamp_min(1e-30)
        if bool(dead.any()):
            r = _orth_against(Q[:, : j + 1], torch.randn_like(w))
            w = torch.where(
                dead[:, None], r / r.norm(dim=1, keepdim=True).clamp_min(1e-30) * b[:, None].clamp_min(1.0), w
            )
            b = torch.where(dead, torch.zeros_like(b), b)
            q_next = _unit(w)
        else:
            q_next = w / b[:, None]
        betas.append(b)
        q_prev, q, beta_prev = q, q_next, b
    T = torch.diag_embed(torch.stack(alphas, 1))
    if betas:
        T = T + (off := torch.diag_embed(torch.stack(betas, 1), offset=1)) + off.transpose(1, 2)
    return torch.linalg.eigvalsh(T).clamp_min(0.0)


def _linear_ops(fn, h: torch.Tensor):
    """(fn(h), v -> J v, u -> J^T u) on one recorded graph: J^T u by backward, J v by the
    double-backward trick (J v = d/dw <J^T w, v>), several times faster than forward-mode AD on CPU.
    Falls back to torch.func.jvp / vjp when the block has no double backward."""
    with torch.enable_grad():
        hh = h.clone().requires_grad_(True)
        out = fn(hh)
        w = torch.zeros_like(out, requires_grad=True)
        try:
            (r,) = torch.autograd.grad(out, hh, w, create_graph=True)
            if not r.requires_grad:
                raise RuntimeError("no double backward")
        except RuntimeError:
            out, pull = vjp(fn, h)
            return out.detach(), (lambda v: jvp(fn, (h,), (v,))[1].detach()), (lambda u: pull(u)[0].detach())

    def jv(v):
        (o,) = torch.autograd.grad(r, w, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(out) if o is None else o

    def jtv(u):
        return torch.autograd.grad(out, hh, u, retain_graph=True)[0]

    return out.detach(), jv, jtv


def block_spectrum(
    fn, h: torch.Tensor, iters: int = 300, lanczos: int = 64, dense_max: int = 2000, seed: int = 0
) -> dict:
    """Per-sample spectrum of the Jacobian of a batched, per-sample map `fn` at `h` (B, *in)."""
    h = h.detach()
    out, jv, jtv = _linear_ops(fn, h)
    in_dim, out_dim = h[0].numel(), out[0].numel()
    g = torch.Generator(device="cpu").manual_seed(seed)
    smax = power_norm(jv, jtv, torch.randn(h.shape, generator=g).to(h))
    if out_dim <= in_dim:
        op, q0 = (lambda u: jv(jtv(u))), torch.randn(out.shape, generator=g).to(out)
    else:
        op, q0 = (lambda v: jtv(jv(v))), torch.randn(h.shape, generator=g).to(h)
    ritz = lanczos_eigs(op, q0, lanczos).float()
    smin = ritz[:, 0].sqrt()
    power = smax
    smax = torch.maximum(smax, ritz[:, -1].sqrt())  # both are lower bounds on sigma_max: keep the better
    small = min(in_dim, out_dim)
    if small <= dense_max and in_dim * out_dim <= 2e7:
        one = lambda z: fn(z.unsqueeze(0)).squeeze(0)
        jac = (torch.func.jacfwd if in_dim < out_dim else torch.func.jacrev)(one)(h[0])
        s = torch.linalg.svdvals(jac.reshape(out_dim, in_dim).double())
        rank = int((s > max(in_dim, out_dim) * EPS32 * s[0]).sum()) if s[0] > 0 else 0
        method = "dense"
    else:
        top = ritz[0, -1]
        rank = int((ritz[0] > (max(in_dim, out_dim) * EPS32) ** 2 * 1e4 * top).sum()) if top > 0 else 0
        method = "lanczos-lower-bound"
    smin = torch.minimum(smin, smax).detach()
    return {
        "sigma_max": smax.detach(),
        "sigma_max_power": power.detach(),
        "sigma_min": smin,
        "rank": rank,
        "rank_method": method,
        "in_dim": in_dim,
        "out_dim": out_dim,
        "exact_sigma_min": ritz.shape[1] >= small,
    }


def _batch(model: nn.Module, task_or_batch, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(model.parameters()).device
    if isinstance(task_or_batch, (tuple, list)):
        x, y = task_or_batch
    elif isinstance(task_or_batch, torch.Tensor):
        x, y = task_or_batch, None
    else:
        task = for_model(task_or_batch, model)
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(task.y_test), generator=g)[:n]
        x, y = task.x_test[idx], task.y_test[idx]
    x = x[:n].to(device).float()
    if y is None:  # unlabelled batch: the model's own predictions as labels
        with torch.no_grad():
            y = model(x).argmax(1)
    return x, y[:n].to(device).long()


def _param_jac_norms(block: nn.Module, h: torch.Tensor, g: torch.Tensor, iters: int):
    """Per sample ||dH/dtheta|| (power iteration) and ||(dH/dtheta)^T g|| for block params theta."""
    params = {k: p.detach() for k, p in block.named_parameters()}
    sizes = [p.numel() for p in params.values()]
    h = h.detach()

    def f(p, x):
        return functional_call(block, p, (x.unsqueeze(0),)).squeeze(0)

    def unpack(flat):  # (P,) -> {name: tensor}
        return {k: c.view(p.shape) for (k, p), c in zip(params.items(), flat.split(sizes), strict=False)}

    fwd = vmap(lambda t, x: jvp(lambda p: f(p, x), (params,), (unpack(t),))[1])
    bwd = vmap(lambda u, x: torch.cat([v.flatten() for v in vjp(lambda p: f(p, x), params)[1](u)[0].values()]))
    gen = torch.Generator().manual_seed(0)
    v0 = torch.randn((h.shape[0], sum(sizes)), generator=gen).to(h)
    return power_norm(lambda t: fwd(t, h), lambda u: bwd(u, h), v0, iters=iters), _bnorm(bwd(g.detach(), h))


def _glue_norm(src: torch.Tensor, dst: torch.Tensor, iters: int) -> torch.Tensor:
    """Per-sample ||d dst / d src|| through the recorded graph (double-backward trick for the JVP)."""
    if dst is src:
        return torch.ones(src.shape[0], device=src.device)
    if dst.shape[0] != src.shape[0]:
        raise ValueError("glue between blocks changes the batch size")

    def jtv(u):
        (r,) = torch.autograd.grad(dst, src, u, retain_graph=True, allow_unused=True)
        return torch.zeros_like(src) if r is None else r

    w = torch.zeros_like(dst, requires_grad=True)
    (r,) = torch.autograd.grad(dst, src, w, retain_graph=True, create_graph=True, allow_unused=True)
    if r is None or not r.requires_grad:
        return torch.zeros(src.shape[0], device=src.device)

    def jv(v):
        (out,) = torch.autograd.grad(r, w, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(dst) if out is None else out

    return power_norm(jv, jtv, torch.randn_like(src), iters=iters).detach()


def diagnose(
    model: nn.Module,
    task_or_batch,
    n: int = 64,
    seed: int = 0,
    iters: int = 300,
    lanczos: int = 64,
    dense_max: int = 2000,
) -> dict:
    """Per-block Jacobian diagnostics and the bottleneck-bound check on a batch.

    `task_or_batch`: a Task (n random test samples, adapted to `model.input_shape`), an (x, y) pair,
    or an input tensor x (labelled with the model's own predictions). The model is copied and run in
    eval mode; it is not changed. Returns {"layers": [row, ...], "bound": {...}, "n": n}.
    """
    m = copy.deepcopy(model).eval()
    for p in m.parameters():
        p.requires_grad_(True)
    x, y = _batch(m, task_or_batch, n, seed)
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    blocks, logits = trace_blocks(m, x)
    losses = F.cross_entropy(logits, y, reduction="none")
    rows = []
    for b in blocks:
        params, gn = list(b["module"].parameters()), 0.0
        if params:
            grads = torch.autograd.grad(losses.mean(), params, retain_graph=True, allow_unused=True)
            gn = math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))
        spec = b["spec"] = block_spectrum(b["module"], b["input"], iters, lanczos, dense_max, seed)
        smax, smin = spec["sigma_max"], spec["sigma_min"]
        ratio = torch.where(smax > 0, smin / smax.clamp_min(1e-30), torch.zeros_like(smax))
        cond = float((smax / smin).mean()) if bool((smin > 0).all()) else math.inf
        rows.append(
            {
                "name": b["name"],
                "type": type(b["module"]).__name__,
                "skip": b["skip"],
                "jacobian_norm": float(smax.mean()),
                "jacobian_norm_max": float(smax.max()),
                "sigma_min": float(smin.mean()),
                "rank": spec["rank"],
                "rank_method": spec["rank_method"],
                "in_dim": spec["in_dim"],
                "out_dim": spec["out_dim"],
                "condition": cond,
                "severity": float((1 - ratio).mean()),
                "severity_max": float((1 - ratio).max()),
                "grad_norm": gn,
                "exact_sigma_min": spec["exact_sigma_min"],
            }
        )
    return {
        "n": int(x.shape[0]),
        "layers": rows,
        "bound": _bound(blocks, losses, iters),
        "skip_blocks": [r["name"] for r in rows if r["skip"]],
    }


def _bound(blocks: list[dict], losses: torch.Tensor, iters: int) -> dict:
    first = next((i for i, b in enumerate(blocks) if any(True for _ in b["module"].parameters())), None)
    if first is None:
        return {"holds": None, "note": "no block has parameters"}
    b1, last = blocks[first], blocks[-1]
    total = losses.sum()  # samples are independent in eval mode: row i of each gradient is dL_i/d.
    g1, gL = torch.autograd.grad(total, [b1["output"], last["output"]], retain_graph=True)
    dtheta, lhs = _param_jac_norms(b1["module"], b1["input"], g1, iters)
    factors = [dtheta]
    glue = []
    for prev, cur in zip(blocks[first:], blocks[first + 1 :], strict=False):
        gnorm = _glue_norm(prev["output"], cur["input"], iters)
        glue.append(float(gnorm.max()))
        factors += [gnorm, cur["spec"]["sigma_max"]]
    rhs = torch.stack(factors).prod(0) * _bnorm(gL)
    ok = lhs <= rhs * (1 + 1e-4) + 1e-12
    return {
        "first_block": b1["name"],
        "last_block": last["name"],
        "holds": bool(ok.all()),
        "fraction_holding": float(ok.float().mean()),
        "lhs": [float(v) for v in lhs],
        "rhs": [float(v) for v in rhs],
        "lhs_mean": float(lhs.mean()),
        "rhs_mean": float(rhs.mean()),
        "tightness": float((lhs / rhs.clamp_min(1e-30)).mean()),
        "param_jacobian_norm": float(dtheta.mean()),
        "grad_out_norm": float(_bnorm(gL).mean()),
        "glue_norms": glue,
        "formula": "||dL/dtheta_1|| <= ||dH_1/dtheta_1|| * prod_{l>=2} ||G_l|| ||J_l|| * ||dL/dH_L|| (per sample)",
    }


def compare(base: nn.Module, locked: nn.Module, task, n: int = 64, **kw) -> dict:
    """diagnose() both models on the same batch; rows matched by block name with locked/base ratios."""
    a, b = diagnose(base, task, n=n, **kw), diagnose(locked, task, n=n, **kw)
    by = {r["name"]: r for r in a["layers"]}
    rows = []
    for r in b["layers"]:
        o = by.get(r["name"])
        if o is None:
            continue
        rows.append(
            dict(
                name=r["name"],
                skip=r["skip"],
                **{
                    f"{k}_{s}": v[k]
                    for k in ("jacobian_norm", "severity", "grad_norm", "sigma_min", "rank")
                    for s, v in (("base", o), ("locked", r))
                },
                jacobian_ratio=r["jacobian_norm"] / o["jacobian_norm"] if o["jacobian_norm"] > 0 else math.inf,
                grad_ratio=r["grad_norm"] / o["grad_norm"] if o["grad_norm"] > 0 else math.inf,
            )
        )
    return {"base": a, "locked": b, "rows": rows}


def format_table(results: dict[str, dict]) -> str:
    """The per-layer table; with several results, their columns side by side (rows matched by name)."""
    labels, first = list(results), results[next(iter(results))]["layers"]
    others = [{r["name"]: r for r in results[k]["layers"]} for k in labels]
    cols = [
        ("jacobian_norm", "|J|"),
        ("sigma_min", "smin"),
        ("rank", "rank"),
        ("condition", "cond"),
        ("severity", "sev"),
        ("grad_norm", "|grad|"),
    ]
    many = len(labels) > 1
    width = {k: max(11, len(k) + 8) if many else 11 for k in labels}
    head = f"{'block':<18}{'skip':>5}" + "".join(
        f"{(t + (':' + k if many else '')):>{width[k]}}" for c, t in cols for k in labels
    )
    lines = [head + "   (means over samples)"]
    for r in first:
        line = f"{r['name'][:17]:<18}{('yes' if r['skip'] else ''):>5}"
        for c, _t in cols:
            for k, o in zip(labels, others, strict=False):
                v, w = o.get(r["name"], {}).get(c), width[k]
                line += f"{'-':>{w}}" if v is None else (f"{v:>{w}d}" if isinstance(v, int) else f"{v:>{w}.4g}")
        lines.append(line)
    for k in labels:
        bd = results[k]["bound"]
        if bd.get("holds") is not None:
            lines.append(
                f"bound [{k}]: ||dL/dtheta({bd['first_block']})|| = {bd['lhs_mean']:.4g} <= "
                f"{bd['rhs_mean']:.4g} (mean over samples): {'holds' if bd['holds'] else 'FAILS'}"
                f" on {bd['fraction_holding']:.0%}; tightness {bd['tightness']:.3g}"
            )
    return "\n".join(lines)


def plot_diagnostics(results: dict[str, dict], path: str | Path) -> Path:
    """Bar plots per block (Jacobian norm, severity, grad norm), one bar per result side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results)
    names = [r["name"] for r in results[labels[0]]["layers"]]
    fig, axes = plt.subplots(3, 1, figsize=(max(6, 0.5 * len(names) + 2), 9), sharex=True)
    width = 0.8 / len(labels)
    for ax, (key, title, log) in zip(
        axes,
        (
            ("jacobian_norm", "Jacobian spectral norm", True),
            ("severity", "locking severity 1 - smin/smax", False),
            ("grad_norm", "parameter-gradient norm", True),
        ),
        strict=False,
    ):
        shown = []
        for j, k in enumerate(labels):
            by = {r["name"]: r for r in results[k]["layers"]}
            vals = [
                by[n][key] if n in by and math.isfinite(by[n][key]) and (by[n][key] > 0 or not log) else math.nan
                for n in names
            ]  # no bar for a missing, infinite or (on a log axis) zero value
            shown += [v for v in vals if not math.isnan(v)]
            ax.bar([i + (j - (len(labels) - 1) / 2) * width for i in range(len(names))], vals, width, label=k)
        if log and shown:  # a log axis with nothing to show makes matplotlib warn; stay linear then
            ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    skip = results[labels[0]]["layers"]
    axes[-1].set_xticks(range(len(names)))
    axes[-1].set_xticklabels(
        [n + (" (skip)" if r["skip"] else "") for n, r in zip(names, skip, strict=False)],
        rotation=60,
        ha="right",
        fontsize=7,
    )
    fig.tight_layout()
    (path := Path(path)).parent.mkdir(parents=True, exist_ok=True)
    with writing_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def to_json(obj):
    """A copy with inf / nan floats replaced by None (for strict JSON)."""
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
