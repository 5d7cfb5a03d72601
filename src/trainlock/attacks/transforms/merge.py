"""`merge`: re-factorize products of linear maps so that no factor carries an inflated spectrum.

Only the product of consecutive linear maps is a property of the function; how it is split into
factors is a gauge the lock can hide in. Three cases (all exact, eval mode):

(a) Linear -> Linear with nothing nonlinear between them (identity, or Dropout, which is the
    identity in eval): M = W2 W1 and b = W2 b1 + b2, re-factorized balanced by SVD
    M = U S V^T:  W1' = S^{1/2} V^T,  W2' = U S^{1/2},  b1' = 0,  b2' = b.  Shapes are kept: when
    the inner width h exceeds r = min(out2, in1) the extra rows of W1' / columns of W2' are zero.
    Both factors then have singular values sqrt(S) (condition number sqrt(cond M), sigma_max
    sqrt(||M||)), the best-conditioned split there is.
(b) Attention blocks (`attention.py`: trainlock's own, BERT- and Llama-family ones): per head h,
    scores depend on W_Q^T W_K (and on the bias terms b_Q^T W_K, W_Q^T b_K) and the value path on
    W_O[:, h] W_V[h]; any invertible R (d_h x d_h) with W_Q' = R W_Q, b_Q' = R b_Q,
    W_K' = R^{-T} W_K, b_K' = R^{-T} b_K (and W_V' = R W_V, b_V' = R b_V, W_O' = W_O R^{-1}) keeps
    all of them. R is the balancing transform: with P = W_Q W_Q^T = L L^T and
    L^T (W_K W_K^T) L = U Sigma^2 U^T, R = Sigma^{1/2} U^T L^{-1}, after which
    W_Q' W_Q'^T = W_K' W_K'^T = Sigma, i.e. both factors get the singular values of
    (W_Q^T W_K)^{1/2}. (Attention rows sum to 1, so b_V passes to the output unchanged.) Grouped
    key/value heads share one R over their query heads; under rotary embeddings R is a positive
    scale per rotary row pair.
(c) A compensation layer: a later lock (`specdef-reparam`) inserts a square Linear C after the
    locked W~ with C W~ = W. Such a pair is folded back into ONE layer: the first module is
    replaced by a Linear holding the product (and folded bias), the second by nn.Identity. The
    fold is checked on a probe batch and undone (falling back to (a)) when the architecture does
    not allow it. `fold="auto"` folds pairs whose second layer is square, `"always"` every
    Linear->Linear pair, `"never"` none.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .attention import HeadView, attention_views
from .base import TRANSFORMS, TransformContext, TransformNotApplicable, TransformOutcome
from .graph import Chain, find_chains, probe_input, set_module, sigma_max_by_layer, sigma_stats

FOLDS = ("auto", "always", "never")


def _cond(w: torch.Tensor) -> float:
    s = torch.linalg.svdvals(w.detach().double().reshape(w.shape[0], -1))
    s = s[s > s[0] * 1e-10] if s[0] > 0 else s
    return float(s[0] / s[-1]) if len(s) and s[-1] > 0 else float("inf")


def _product(c: Chain) -> tuple[torch.Tensor, torch.Tensor | None]:
    """M = W2 W1 (out2, in1) and b = W2 b1 + b2 (or None when neither layer has a bias), float64."""
    W1, W2 = c.producer.weight.detach().double(), c.consumer.weight.detach().double()
    M = W2 @ W1
    b = None
    if c.producer.bias is not None:
        b = W2 @ c.producer.bias.detach().double()
    if c.consumer.bias is not None:
        b = c.consumer.bias.detach().double() if b is None else b + c.consumer.bias.detach().double()
    return M, b


@torch.no_grad()
def _set_bias(layer: nn.Linear, b: torch.Tensor | None) -> None:
    if b is None:
        if layer.bias is not None:
            layer.bias.zero_()
        return
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros(layer.out_features, dtype=layer.weight.dtype, device=layer.weight.device))
    layer.bias.copy_(b.to(layer.bias.dtype))


@torch.no_grad()
def refactor_pair(c: Chain) -> dict:
    """(a): balanced SVD re-factorization of a Linear -> Linear pair, in place, shapes kept."""
    cond_before = max(_cond(c.producer.weight), _cond(c.consumer.weight))
    M, b = _product(c)
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    h = c.producer.out_features
    r = min(S.shape[0], h)
    root = S[:r].sqrt()
    W1 = torch.zeros(h, M.shape[1], dtype=torch.float64)
    W2 = torch.zeros(M.shape[0], h, dtype=torch.float64)
    W1[:r] = root[:, None] * Vh[:r]
    W2[:, :r] = U[:, :r] * root[None, :]
    c.producer.weight.copy_(W1.to(c.producer.weight.dtype))
    c.consumer.weight.copy_(W2.to(c.consumer.weight.dtype))
    if c.producer.bias is not None:
        c.producer.bias.zero_()
    _set_bias(c.consumer, b)
    return {
        "kind": "refactor",
        "rank": r,
        "inner": h,
        "cond_before": cond_before,
        "cond_after": max(_cond(c.producer.weight), _cond(c.consumer.weight)),
    }


@torch.no_grad()
def fold_pair(model: nn.Module, c: Chain, x: torch.Tensor | None) -> dict | None:
    """(c): replace the pair by one Linear holding the product + nn.Identity; None if not allowed."""
    M, b = _product(c)
    w = c.producer.weight
    single = nn.Linear(M.shape[1], M.shape[0], bias=b is not None).to(device=w.device, dtype=w.dtype)
    single.weight.copy_(M.to(w.dtype))
    if b is not None:
        single.bias.copy_(b.to(w.dtype))
    single.weight.requires_grad_(w.requires_grad)
    ref = None
    if x is not None:
        was = model.training
        model.eval()
        ref = model(x)
    old_p = set_module(model, c.producer_name, single)
    old_c = set_module(model, c.consumer_name, nn.Identity())
    ok = True
    if x is not None:
        try:
            out = model(x)
            tol = 1e-5 * (1 + float(ref.abs().max()))
            ok = out.shape == ref.shape and torch.allclose(out, ref, rtol=1e-4, atol=tol)
        except Exception:  # the architecture relies on the pair in some other way
            ok = False
        model.train(was)
    if not ok:
        set_module(model, c.producer_name, old_p)
        set_module(model, c.consumer_name, old_c)
        return None
    return {"kind": "fold", "shape": list(M.shape), "checked": x is not None}


def _balance(P: torch.Tensor, Q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """R, R^{-1} with R P R^T = R^{-T} Q R^{-1} = diagonal; None when P or Q is (nearly) singular."""
    try:
        L = torch.linalg.cholesky(P)
    except RuntimeError:
        return None
    ev, U = torch.linalg.eigh(L.T @ Q @ L)
    if ev.min() <= ev.max() * 1e-12 or ev.max() <= 0:
        return None
    sig = ev.sqrt()  # Sigma (the balanced Gram diagonal)
    Linv = torch.linalg.inv(L)
    R = sig.pow(0.5)[:, None] * (U.T @ Linv)
    Rinv = (L @ U) * sig.pow(-0.5)[None, :]
    return R, Rinv


def _apply_rows(layer: nn.Linear, rows: slice, R: torch.Tensor) -> None:
    """layer.weight[rows] <- R @ layer.weight[rows] (and its bias alike)."""
    layer.weight[rows] = (R @ layer.weight[rows].double()).to(layer.weight.dtype)
    if layer.bias is not None:
        layer.bias[rows] = (R @ layer.bias[rows].double()).to(layer.bias.dtype)


@torch.no_grad()
def balance_attention(view: HeadView) -> dict:
    """(b): per key/value head, balance W_Q/W_K and W_V/W_O in place (see `attention.py`). Per-head notes."""
    dh = view.head_dim
    half = dh // 2
    done, skipped = 0, []

    def pair(w: torch.Tensor) -> torch.Tensor:  # (rows,): the squared norm of each rotary row pair (i, i + dh/2)
        return w[:half].pow(2).sum(1) + w[half:].pow(2).sum(1)

    for g in range(view.kv_heads):
        kv = slice(g * dh, (g + 1) * dh)
        qs = [slice(h * dh, (h + 1) * dh) for h in view.group(g)]
        Wk = view.k.weight[kv].double()
        if view.rotary:  # a positive scale per rotary row pair (i, i + dh/2): it commutes with the rotations
            nq = sum(pair(view.q.weight[sl].double()) for sl in qs)
            nk = pair(Wk)
            if (nq <= 0).any() or (nk <= 0).any():
                skipped.append(f"head {g} q/k (a zero rotary pair)")
            else:
                c = (nk / nq).pow(0.25).repeat(2)  # after: sum ||q rows||^2 = ||k rows||^2 per pair
                for sl in qs:
                    _apply_rows(view.q, sl, torch.diag(c))
                _apply_rows(view.k, kv, torch.diag(1 / c))
                done += 1
        else:
            rr = _balance(sum(view.q.weight[sl].double() @ view.q.weight[sl].double().T for sl in qs), Wk @ Wk.T)
            if rr is None:
                skipped.append(f"head {g} q/k (rank-deficient)")
            else:
                R, Rinv = rr
                for sl in qs:
                    _apply_rows(view.q, sl, R)
                _apply_rows(view.k, kv, Rinv.T)
                done += 1
        Wv = view.v.weight[kv].double()
        rr = _balance(Wv @ Wv.T, sum(view.o.weight[:, sl].double().T @ view.o.weight[:, sl].double() for sl in qs))
        if rr is None:
            skipped.append(f"head {g} v/o (rank-deficient)")
        else:
            R, Rinv = rr
            _apply_rows(view.v, kv, R)
            for sl in qs:
                view.o.weight[:, sl] = (view.o.weight[:, sl].double() @ Rinv).to(view.o.weight.dtype)
            done += 1
    return {"kind": "attention", "balanced": done, "skipped": skipped}


def _linear_pairs(model: nn.Module) -> list[Chain]:
    return [
        c
        for c in find_chains(model)
        if c.linear_only and isinstance(c.producer, nn.Linear) and isinstance(c.consumer, nn.Linear)
    ]


class Merge:
    """Factory options: fold ("auto" | "always" | "never"), attention (balance attention heads)."""

    function_preserving = True

    def __init__(self, fold: str = "auto", attention: bool = True):
        if fold not in FOLDS:
            raise ValueError(f"merge: fold must be one of {FOLDS}, got {fold!r}")
        self.fold, self.attention = fold, bool(attention)

    def _wants_fold(self, c: Chain) -> bool:
        if self.fold == "never":
            return False
        return self.fold == "always" or c.consumer.in_features == c.consumer.out_features

    def __call__(self, model: nn.Module, ctx: TransformContext) -> TransformOutcome:
        attn, refused_attn = attention_views(model) if self.attention else ([], [])
        pairs = _linear_pairs(model)
        if not pairs and not attn:
            why = f"; attention blocks not balanced: {'; '.join(refused_attn)}" if refused_attn else ""
            raise TransformNotApplicable(
                "no Linear -> Linear pair without a nonlinearity between them and no attention block whose "
                "q/k and v/o products can be balanced" + why
            )
        before = sigma_max_by_layer(model)
        merged: dict[str, dict] = {}
        x = probe_input(model, ctx)
        # (c) folds first; each fold changes the module tree, so look again after each one
        refused: set[str] = set()
        for _ in range(len(pairs) + 1):
            cand = [c for c in _linear_pairs(model) if self._wants_fold(c) and c.describe() not in refused]
            if not cand:
                break
            c = cand[0]
            res = fold_pair(model, c, x)
            if res is None:
                refused.add(c.describe())
            else:
                merged[c.describe()] = res
        # (a) balanced re-factorization of the remaining pairs
        for c in _linear_pairs(model):
            res = refactor_pair(c)
            if c.describe() in refused:
                res["fold_refused"] = True
            merged[c.describe()] = res
        # (b) attention heads
        for view in attn:
            merged[view.name or "attention"] = balance_attention(view)
        after = sigma_max_by_layer(model)
        stats = sigma_stats(before, after)
        stats["merged"] = merged
        parts = []
        for k, v in merged.items():
            if v["kind"] == "fold":
                parts.append(f"folded {k} into one Linear {tuple(v['shape'])} (+ Identity)")
            elif v["kind"] == "refactor":
                parts.append(
                    f"re-factorized {k} (rank {v['rank']}/{v['inner']}, factor cond "
                    f"{v['cond_before']:.3g} -> {v['cond_after']:.3g})"
                )
            else:
                parts.append(
                    f"balanced {v['balanced']} q/k and v/o head products in {k}"
                    + (f" (skipped {', '.join(v['skipped'])})" if v["skipped"] else "")
                )
        if refused_attn:
            parts.append(f"not balanced: {'; '.join(refused_attn)}")
        note = "; ".join(parts) + f"; max sigma_max {stats['max_sigma_before']:.4g} -> {stats['max_sigma_after']:.4g}"
        return TransformOutcome(model=model, note=note, stats=stats)


TRANSFORMS.add("merge", Merge)
