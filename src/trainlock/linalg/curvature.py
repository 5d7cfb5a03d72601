"""Loss-curvature probes: Hessian-vector products, Lanczos extreme eigenvalues, curvature ratios.

The Hessian is taken with respect to the model's *trainable* parameters (``requires_grad``),
of ``loss_fn(model, batch)``, which must return a scalar. The model's train/eval mode is left as
is: call ``model.eval()`` first if dropout or batch-norm batch statistics should not enter.

Sign convention: ``which="largest"`` means the largest *algebraic* eigenvalues (lambda_max first),
``which="smallest"`` the smallest algebraic ones (the most negative, lambda_min, first). Neither
is "largest magnitude". Single-vector Lanczos sees each distinct eigenvalue once per Krylov
block, so an exactly repeated eigenvalue may be reported fewer times than its multiplicity (it
reappears only after a breakdown restart); values and residuals are still correct.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..config import option

__all__ = [
    "ConvergenceWarning",
    "LanczosOptions",
    "LanczosResult",
    "condition_estimate",
    "dense_hessian",
    "hessian_eigenvalues",
    "hessian_spectrum",
    "hvp",
    "lanczos",
]

LossFn = Callable[[torch.nn.Module, Any], Tensor]
DENSE_MAX_PARAMS = 5000


class ConvergenceWarning(UserWarning):
    """Lanczos stopped at its iteration limit before every wanted Ritz value met the tolerance."""


class LanczosResult(NamedTuple):
    """The k wanted Ritz values, most extreme first (descending for "largest", ascending for
    "smallest"); residuals |beta_m * s_m| (a bound on the distance to a true eigenvalue);
    converged: residual <= tol * |value|; iters: Lanczos steps (matvecs) taken."""

    eigenvalues: Tensor  # (k,) float64
    residuals: Tensor  # (k,) float64
    converged: Tensor  # (k,) bool
    iters: int


# --------------------------------------------------------------------------- helpers


def _params(model: torch.nn.Module) -> list[Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("curvature: the model has no trainable parameters (none with requires_grad=True)")
    return params


def _loss(model: torch.nn.Module, loss_fn: LossFn, batch: Any) -> Tensor:
    loss = loss_fn(model, batch)
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError(
            f"curvature: loss_fn must return a scalar tensor, got {type(loss).__name__}"
            + (f" of shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else "")
        )
    if not loss.requires_grad:
        raise ValueError(
            "curvature: the loss does not require grad, so there is no differentiable path to "
            "the trainable parameters (computed under torch.no_grad(), detached, frozen?)"
        )
    return loss.reshape(())


def _batch_size(batch: Any) -> int | None:
    if isinstance(batch, Tensor):
        return batch.shape[0] if batch.ndim > 0 else None
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    sizes = [n for n in map(_batch_size, items) if n is not None]
    return sizes[0] if sizes else None


def _split(batch: Any, chunks: int) -> list[tuple[Any, int]]:
    """Split every tensor with the batch's leading size along dim 0; other items are shared.
    Returns (chunk, chunk_size) pairs."""
    n = _batch_size(batch)
    if n is None:
        raise ValueError("curvature: chunks > 1 needs a batch holding tensors with a leading batch dimension")
    bounds = [round(i * n / min(chunks, n)) for i in range(min(chunks, n) + 1)]

    def cut(x: Any, a: int, b: int) -> Any:
        if isinstance(x, Tensor):
            return x[a:b] if x.ndim > 0 and x.shape[0] == n else x
        if isinstance(x, dict):
            return {key: cut(val, a, b) for key, val in x.items()}
        if isinstance(x, (list, tuple)):
            out = [cut(val, a, b) for val in x]
            return type(x)(*out) if hasattr(x, "_fields") else type(x)(out)
        return x

    return [(cut(batch, a, b), b - a) for a, b in itertools.pairwise(bounds)]


def _grad_terms(loss: Tensor, params: list[Tensor]) -> list[Tensor | None]:
    """First gradients kept differentiable; None where the gradient is constant (zero curvature)."""
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    return [g if g is not None and g.requires_grad else None for g in grads]


def _second(grads: list, params: list[Tensor], v: Sequence[Tensor], retain: bool) -> list[Tensor]:
    """H v from kept first gradients (``retain`` keeps their graph for another product)."""
    idx = [i for i, g in enumerate(grads) if g is not None]
    if not idx:
        return [torch.zeros_like(p) for p in params]
    hv = torch.autograd.grad(
        [grads[i] for i in idx], params, grad_outputs=[v[i] for i in idx], retain_graph=retain, allow_unused=True
    )
    return [h.detach() if h is not None else torch.zeros_like(p) for h, p in zip(hv, params, strict=False)]


def _as_list(v: Tensor | Sequence[Tensor], params: list[Tensor]) -> list[Tensor]:
    if isinstance(v, Tensor):
        total = sum(p.numel() for p in params)
        if v.numel() != total:
            raise ValueError(f"hvp: flat v has {v.numel()} entries, the trainable parameters have {total}")
        return [c.view_as(p).to(p.dtype) for c, p in zip(v.split([p.numel() for p in params]), params, strict=False)]
    v = list(v)
    if len(v) != len(params) or any(a.shape != p.shape for a, p in zip(v, params, strict=False)):
        raise ValueError("hvp: v must match the trainable parameters' shapes (or be one flat vector)")
    return [a.to(device=p.device, dtype=p.dtype) for a, p in zip(v, params, strict=False)]


# --------------------------------------------------------------------------- Hessian-vector product


def hvp(
    model: torch.nn.Module, loss_fn: LossFn, batch: Any, v: Tensor | Sequence[Tensor], chunks: int = 1
) -> list[Tensor]:
    """H v by double backward, H the Hessian of ``loss_fn(model, batch)`` w.r.t. the trainable
    parameters. ``v``: tensors shaped like those parameters, or one flat vector. Returns one
    tensor per trainable parameter.

    ``chunks > 1`` splits the batch along dim 0 into that many pieces and averages their HVPs
    weighted by piece size: equal to the full-batch HVP when the loss is a per-example *mean*
    (and the model has no cross-example coupling, e.g. batch-norm in train mode)."""
    params = _params(model)
    v = _as_list(v, params)
    if chunks <= 1:
        return _second(_grad_terms(_loss(model, loss_fn, batch), params), params, v, retain=False)
    pieces = _split(batch, int(chunks))
    n = sum(size for _, size in pieces)
    acc = [torch.zeros_like(p) for p in params]
    for piece, size in pieces:
        hv = _second(_grad_terms(_loss(model, loss_fn, piece), params), params, v, retain=False)
        for a, h in zip(acc, hv, strict=False):
            a.add_(h, alpha=size / n)
    return acc


def _matvec(model: torch.nn.Module, loss_fn: LossFn, batch: Any, chunks: int, reuse_graph: bool):
    """A flat float64 matvec x -> H x, the dimension and the first parameter (its device and dtype). With
    ``reuse_graph`` (only for chunks == 1) the first-gradient graph is built once and reused by every product."""
    params = _params(model)
    n = sum(p.numel() for p in params)
    if reuse_graph and chunks <= 1:
        grads = _grad_terms(_loss(model, loss_fn, batch), params)

        def mv(x: Tensor) -> Tensor:
            hv = _second(grads, params, _as_list(x, params), retain=True)
            return torch.cat([h.reshape(-1) for h in hv]).double()
    else:
        _loss(model, loss_fn, batch)  # fail early on a missing differentiable path

        def mv(x: Tensor) -> Tensor:
            return torch.cat([h.reshape(-1) for h in hvp(model, loss_fn, batch, x, chunks=chunks)]).double()

    return mv, n, params[0]


# --------------------------------------------------------------------------- Lanczos


def _wanted(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    """Indices of the k wanted Ritz values (theta ascending), most extreme first."""
    m = len(theta)
    k = min(k, m)
    return np.arange(m - 1, m - 1 - k, -1) if which == "largest" else np.arange(k)


@dataclass
class LanczosOptions:
    """How Lanczos runs (`lanczos`, and `hessian_spectrum` on Hessian-vector products)."""

    iters: int | None = option(None, "Krylov steps at most (default: enough for the tolerance, capped)")
    tol: float = option(1e-6, "stop when every wanted eigenvalue's residual is below tol * |eigenvalue|")
    chunks: int = option(1, "split the batch into this many chunks per product (memory)")
    seed: int = option(0, "seed of the random start vector")
    reuse_graph: bool = option(True, "build the first-gradient graph once (False: a fresh `hvp` per product)")
    warn: bool = option(True, "warn with ConvergenceWarning when a value is not converged")
    reorth: str = option(
        "partial",
        "partial: reorthogonalize the Krylov basis only when Simon's estimate of its loss of orthogonality passes "
        "sqrt(eps) (semi-orthogonality: Ritz values as accurate as full reorthogonalization's); full: at every step",
        choices=lambda: REORTH,
    )
    eps: float | None = option(
        None,
        "relative rounding error of one matvec, for the partial estimate (default: float64's in `lanczos`; "
        "`hessian_spectrum` uses the parameters' dtype's)",
    )

    def __post_init__(self):
        if self.reorth not in REORTH:
            raise ValueError(f"lanczos: reorth must be one of {REORTH}, got {self.reorth!r}")


REORTH = ("partial", "full")


def _omega(omega: np.ndarray, prev: np.ndarray, alpha: list, beta: list, b: float, eps: float, scale: float):
    """Simon's recurrence (1984): estimates of q_{j+1} . q_k (k <= j+1) from those of q_j (`omega`, length j+1)
    and q_{j-1} (`prev`, length j), the tridiagonal so far (alpha_0..alpha_j, beta_0..beta_{j-1}) and b =
    beta_j. Each entry is pushed away from zero by the local rounding term eps * scale / b (the worst case of
    Simon's random term), so the estimate errs on the side of reorthogonalizing. (numpy: these are a few dozen
    numbers, and a torch call's overhead per step would show beside the product itself.)"""
    j = len(alpha) - 1
    a, bt = np.asarray(alpha), np.asarray(beta)  # beta_0 .. beta_{j-1}
    new = np.empty(j + 2)
    local = eps * scale / b
    if j:
        t = bt * omega[1 : j + 1] + (a[:j] - a[j]) * omega[:j]  # beta_k w_{j,k+1} + (alpha_k - alpha_j) w_{j,k}
        t[1:] += bt[: j - 1] * omega[: j - 1]  # + beta_{k-1} w_{j,k-1}
        t -= bt[j - 1] * prev[:j]  # - beta_{j-1} w_{j-1,k}
        new[:j] = (t + np.copysign(eps * scale, t)) / b  # |t| grown by the rounding term, sign kept
    new[j] = local  # the three-term recurrence orthogonalizes q_{j+1} against q_j locally
    new[j + 1] = 1.0
    return new


def lanczos(
    matvec: Callable[[Tensor], Tensor],
    n: int,
    k: int = 1,
    which: str = "largest",
    options: LanczosOptions | None = None,
    device: torch.device | str | None = None,
) -> LanczosResult:
    """Lanczos in float64 on a symmetric operator of size n, with the basis kept orthogonal (see
    `LanczosOptions.reorth`: partial by default, as PROPACK does; full on request).

    ``matvec`` maps a float64 vector (n,) to (n,). Stops as soon as the k wanted Ritz values
    (see ``which``) all have residual <= tol * |value|, or after ``iters`` steps (default
    min(n, max(64, 16 k))). The whole Krylov basis (iters x n, float64) is kept in memory."""
    o = options or LanczosOptions()
    if which not in ("largest", "smallest"):
        raise ValueError(f"lanczos: which must be 'largest' or 'smallest', got {which!r}")
    if n < 1 or k < 1:
        raise ValueError(f"lanczos: need n >= 1 and k >= 1, got n={n}, k={k}")
    k = min(k, n)
    iters = min(n, max(64, 16 * k) if o.iters is None else max(int(o.iters), 1))
    eps = torch.finfo(torch.float64).eps if o.eps is None else float(o.eps)
    gen = torch.Generator().manual_seed(o.seed)

    def rand(Q: Tensor, m: int) -> Tensor:
        q = torch.randn(n, generator=gen, dtype=torch.float64).to(device)
        for _ in range(2):
            q -= Q[:m].T @ (Q[:m] @ q) if m else 0
        return q / q.norm()

    Q = torch.empty(iters + 1, n, dtype=torch.float64, device=device)  # rows filled as they are reached
    alpha, beta = [], []  # beta[j] couples q_j and q_{j+1}
    Q[0] = rand(Q, 0)
    omega, prev = np.ones(1), np.zeros(0)
    again = False  # Simon: after reorthogonalizing q_{j+1}, q_{j+2} must be too
    theta = res = conv = None
    m = 0
    for j in range(iters):
        w = matvec(Q[j]).to(torch.float64).reshape(-1)
        if w.untyped_storage().data_ptr() == Q.untyped_storage().data_ptr():
            w = w.clone()  # a matvec that hands back its input: the updates below are in place
        a = float(torch.dot(w, Q[j]))
        alpha.append(a)
        w.sub_(Q[j], alpha=a)  # the three-term recurrence, in place
        if j:
            w.sub_(Q[j - 1], alpha=beta[-1])
        b = float(w.norm())
        scale = max(abs(x) for x in alpha) + (max(beta) if beta else 0.0)  # ~ ||T|| <= ||A||
        new = _omega(omega, prev, alpha, beta, b, eps, scale) if b > 0 else None
        if o.reorth == "full" or again or new is None or float(np.abs(new[: j + 1]).max()) > math.sqrt(eps):
            for _ in range(2):  # reorthogonalize; a second pass only if the first cancelled much
                w.sub_(Q[: j + 1].T @ (Q[: j + 1] @ w))  # (Daniel-Gragg-Kaufman-Stewart: "twice is enough")
                b, before = float(w.norm()), b
                if b > before / math.sqrt(2):
                    break
            again = not again and o.reorth == "partial"
            if new is not None:
                new[: j + 1] = eps
        m = j + 1
        if b <= 1e-12 * max(scale, 1e-300):  # invariant subspace: exact Ritz values here
            b = 0.0
        T = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)  # the tridiagonal (m x m): numpy, see _omega
        theta, S = np.linalg.eigh(T)
        sel = _wanted(theta, k, which)
        res = np.abs(b * S[-1, sel])
        conv = res <= o.tol * np.abs(theta[sel])
        if (len(sel) == k and bool(conv.all())) or m == n:
            break
        beta.append(b)
        if b > 0:
            torch.div(w, b, out=Q[j + 1])
        else:  # restart orthogonally after a breakdown
            Q[j + 1] = rand(Q, j + 1)
            new = np.full(j + 2, eps)
            new[-1] = 1.0
        omega, prev = new, omega
    sel = _wanted(theta, k, which)
    return LanczosResult(torch.from_numpy(theta[sel].copy()), torch.from_numpy(res), torch.from_numpy(conv), m)


# --------------------------------------------------------------------------- public Hessian API


def hessian_spectrum(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batch: Any,
    k: int = 1,
    which: str = "largest",
    options: LanczosOptions | None = None,
) -> LanczosResult:
    """The full Lanczos result (values, residuals, convergence flags, iterations) for the k
    extreme Hessian eigenvalues; warns with ConvergenceWarning when any is not converged."""
    o = options or LanczosOptions()
    tol = o.tol
    mv, n, p = _matvec(model, loss_fn, batch, o.chunks, o.reuse_graph)
    if o.eps is None:  # a product in the parameters' precision: its rounding drives the loss of orthogonality
        o = replace(o, eps=torch.finfo(p.dtype).eps)
    result = lanczos(mv, n, k=k, which=which, options=o, device=p.device)
    if o.warn and not bool(result.converged.all()):
        warnings.warn(
            f"Lanczos ({which}) did not converge in {result.iters} iterations: "
            f"eigenvalues {result.eigenvalues.tolist()}, residuals {result.residuals.tolist()}, "
            f"converged {result.converged.tolist()} (tol={tol} relative); raise iters",
            ConvergenceWarning,
            stacklevel=3,
        )
    return result


def hessian_eigenvalues(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batch: Any,
    k: int = 1,
    which: str = "largest",
    iters: int | None = None,
    tol: float = 1e-6,
    chunks: int = 1,
) -> torch.Tensor:
    """The k extreme Hessian eigenvalues (float64 tensor (k,)), most extreme first:
    ``which="largest"``: largest algebraic (lambda_max first); ``"smallest"``: smallest
    algebraic (most negative, lambda_min first). Not converged values are still returned, with a
    ConvergenceWarning naming their residuals; use ``hessian_spectrum`` for the full result."""
    res = hessian_spectrum(model, loss_fn, batch, k, which, LanczosOptions(iters=iters, tol=tol, chunks=chunks))
    return res.eigenvalues


def condition_estimate(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batch: Any,
    damping: float = 1e-3,
    iters: int | None = None,
    tol: float = 1e-6,
    chunks: int = 1,
    seed: int = 0,
) -> dict:
    """Extreme curvatures and two ratios of them, from two Lanczos runs.

    Returns ``lambda_max``, ``lambda_min`` (algebraic extremes), ``ratio`` = lambda_max /
    |lambda_min| (inf when lambda_min == 0). For a non-convex loss lambda_min < 0, so ``ratio``
    compares curvature scales; it is a condition number only when the Hessian is positive definite.

    ``damped`` = (lambda_max + mu) / (max(lambda_min, 0) + mu), mu = damping * max(lambda_max, 0):
    the condition number of H_+ + mu I, H_+ being H with its negative eigenvalues clipped to 0
    (1.0 when lambda_max <= 0). Also ``mu``, ``converged_max``/``converged_min``,
    ``residual_max``/``residual_min`` and ``iters_max``/``iters_min``."""
    opts = LanczosOptions(iters=iters, tol=tol, chunks=chunks, seed=seed)
    top = hessian_spectrum(model, loss_fn, batch, 1, "largest", opts)
    bot = hessian_spectrum(model, loss_fn, batch, 1, "smallest", opts)
    lmax, lmin = float(top.eigenvalues[0]), float(bot.eigenvalues[0])
    mu = damping * max(lmax, 0.0)
    ratio = lmax / abs(lmin) if lmin != 0 else math.copysign(math.inf, lmax)
    damped = (lmax + mu) / (max(lmin, 0.0) + mu) if lmax > 0 else 1.0
    return {
        "lambda_max": lmax,
        "lambda_min": lmin,
        "ratio": ratio,
        "damped": damped,
        "mu": mu,
        "converged_max": bool(top.converged[0]),
        "converged_min": bool(bot.converged[0]),
        "residual_max": float(top.residuals[0]),
        "residual_min": float(bot.residuals[0]),
        "iters_max": top.iters,
        "iters_min": bot.iters,
    }


def dense_hessian(model: torch.nn.Module, loss_fn: LossFn, batch: Any, max_params: int = DENSE_MAX_PARAMS) -> Tensor:
    """The full (P, P) Hessian over the trainable parameters (flattened in ``parameters()``
    order), one double-backward row at a time. For tiny models: ValueError above ``max_params``."""
    params = _params(model)
    n = sum(p.numel() for p in params)
    if n > max_params:
        raise ValueError(f"dense_hessian: {n} trainable parameters exceed max_params={max_params}")
    grads = _grad_terms(_loss(model, loss_fn, batch), params)
    flat = [
        g.reshape(-1) if g is not None else torch.zeros(p.numel(), device=p.device, dtype=p.dtype)
        for g, p in zip(grads, params, strict=False)
    ]
    H = torch.zeros(n, n, dtype=params[0].dtype, device=params[0].device)
    row = 0
    for g in flat:
        for i in range(g.numel()):
            if g.requires_grad:
                hs = torch.autograd.grad(g[i], params, retain_graph=True, allow_unused=True)
                hs = [h if h is not None else torch.zeros_like(p) for h, p in zip(hs, params, strict=False)]
                H[row] = torch.cat([h.reshape(-1) for h in hs])
            row += 1
    return H
