"""Theorems 2.1 and 2.2 of the SpecDef paper, checked numerically on one Hessian block.

The paper bounds the Hessian's sigma_max below by sigma_max(W) * sigma_min(A), A the "product terms" around a
weight W.  What we implement and can justify: take a parameter W_i (the Hessian block d2L/dW_i^2) whose
influence on the prediction passes entirely through a later ``nn.Linear`` W_j (u = input of layer j, v = W_j u + b).
Layer j may act on one vector per sample (an MLP) or on every token of a sequence (attention projections and the
in-block MLP of a Transformer: Theorem 2.2); with T tokens per sample, flatten per sample and write

  J_n = dyhat_n/dW_i = P_n  W  M_n,   P_n = dyhat_n/dv_n  (m x T out_j),   W = I_T (x) W_j,
                                      M_n = du_n/dW_i     (T in_j x |W_i|)

(all computed numerically, in float64; ``factorization_ok`` checks the identity, and a path from W_i to the output
that bypasses W_j -- a residual connection -- is a clear error).  The Gauss-Newton part of the block is
GN = J^T H_out J >= c sum_n J_n^T J_n with c = lambda_min(H_out) (2/(N m) for mean MSE), so for every sample n
sigma_max(GN) >= c sigma_max(J_n)^2.  Three lower bounds on sigma_max(J_n) are reported:

* the paper's form (Lemma A.1 chain; sigma_k(X) is the k-th largest singular value, 0 if k > min(X.shape), the
  convention under which sigma_max(XY) >= sigma_max(X) sigma_min(Y) holds for rectangular factors):
  bound = max_n sigma_max(W_j) sigma_min(A_n),
  sigma_min(A_n) := c sigma_{T out_j}(P_n)^2 sigma_{T out_j}(W M_n) sigma_{T in_j}(M_n).
  For T = 1 and a Linear W_i, M_n = Q_n (x) a_n^T and this is c |a_n|^2 sigma(P)^2 sigma(W_j Q) sigma(Q): the
  Theorem 2.1 form.  It is vacuous (0) as soon as one ReLU between i and j is off for every sample (sigma_min of
  M is 0) or the output has fewer than T out_j dimensions (sigma_{T out_j}(P) = 0): always, for per-token layers
  of a model with a small readout.
* Remark A.3's top-k form (Ky Fan + Cauchy-Schwarz):
  sum_{i<=k} sigma_i(H) >= max_n c sigma_{T out_j}(P_n)^2 (sum_{i<=k} sigma_i(W) sigma_{T in_j - i + 1}(M_n))^2 / k.
  It survives rank-deficient M (dead ReLUs) but not a narrow output.
* a range-restricted form (ours): with compact SVDs P_n = U S V_P^T, M_n = U_M S' V^T,
  J_n = U S (V_P^T W U_M) S' V^T, so sigma_max(J_n) >= sigma_min+(P_n) sigma_max(V_P^T W U_M) sigma_min+(M_n),
  sigma_min+ the smallest non-zero singular value.  Write sigma_max(V_P^T W U_M) = rho_n sigma_max(W_j) with
  rho_n in [0, 1] the *alignment* of W_j's top singular directions with what the output can see (rows of P_n)
  and what W_i can move (columns of M_n): restricted = max_n c (sigma_min+(P_n) rho_n sigma_max(W_j)
  sigma_min+(M_n))^2, non-vacuous unless W_j's action is invisible.  It is quadratic in sigma_max(W_j) (the
  block really is: GN contains W_j twice), the paper's form hides the second W_j in sigma_min(A).

All three bound sigma_max(GN) rigorously (``ratio_GN`` >= 1).  The Hessian block is H = GN + R; R = 0 when the
prediction is piecewise linear in W_i (ReLU nets), and then they bound sigma_max(H) too.  With Tanh, LayerNorm
or softmax downstream R != 0: ``ratio`` (against H) is observed, not proved; ``residual`` = sigma_max(R).

The paper's own proof of Theorem 2.2 takes the block of W_Q itself and asserts constants C_sigma, C_V > 0 from
the softmax's second derivative without deriving them (and its (11) reads max{sigma_max(W), sigma_min(A)}): we
do not implement that form.  ``theory.theorem22`` measures it instead: scaling sigma_max(W_Q) or sigma_max(W_K)
saturates the softmax, and whether the Hessian then grows is an empirical question (it is answered there).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.func import functional_call

_EPS64 = torch.finfo(torch.float64).eps
MAX_BLOCK = 5000  # entries of W_i: the block is built densely (|W_i|^2 float64)
MAX_JACOBIAN = 50_000_000  # entries of the batch Jacobian dyhat/dv (N m x N T out_j) before taking diagonals


def _sv(s: torch.Tensor, k: int) -> float:
    """k-th largest of the singular values ``s`` (1-based, descending); 0 if k > len(s)."""
    return float(s[k - 1]) if 1 <= k <= s.numel() else 0.0


def _range_basis(M: torch.Tensor, side: str) -> tuple[torch.Tensor, float]:
    """Orthonormal basis of M's column space (side="col") or row space (side="row") and the smallest non-zero
    singular value (numerical rank with numpy's matrix_rank tolerance); (empty, 0.0) for M = 0."""
    U, s, Vh = torch.linalg.svd(M, full_matrices=False)
    tol = max(M.shape) * _EPS64 * float(s[0]) if s.numel() else 0.0
    r = int((s > tol).sum())
    if r == 0:
        return M.new_zeros(M.shape[0] if side == "col" else M.shape[1], 0), 0.0
    return (U[:, :r] if side == "col" else Vh[:r].T), float(s[r - 1])


def _module_of(model: nn.Module, param_name: str) -> tuple[str, nn.Module]:
    mod_name = param_name.rsplit(".", 1)[0]
    return mod_name, model.get_submodule(mod_name)


def _default_partner(model: nn.Module, param_name: str) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    mod = param_name.rsplit(".", 1)[0]
    if mod not in names or names.index(mod) + 1 >= len(names):
        raise ValueError(f"{param_name}: no later nn.Linear to pair with; name the partner W_j")
    return names[names.index(mod) + 1] + ".weight"


class _Probe:
    """Forward with W_i replaced by ``w`` and ``dj`` added to layer j's output; records layer j's input."""

    def __init__(self, model: nn.Module, param_name: str, mj: nn.Module, x):
        self.model, self.param_name, self.mj, self.x = model, param_name, mj, x
        self.u = self.out_shape = None

    def __call__(self, w: torch.Tensor, dj) -> torch.Tensor:
        calls = []

        def hook(m, inp, out):
            calls.append(1)
            self.u, self.out_shape = inp[0], out.shape
            return out + dj

        h = self.mj.register_forward_hook(hook)
        try:
            yhat = functional_call(self.model, {self.param_name: w}, (self.x,))
        finally:
            h.remove()
        if len(calls) != 1:
            raise ValueError(f"the partner layer ran {len(calls)} times in one forward: expected exactly once")
        return yhat


def _per_sample(jac: torch.Tensor, N: int, rows: int) -> torch.Tensor:
    """(N, rows, N, cols...) -> (N, rows, cols): the per-sample diagonal blocks."""
    jac = jac.reshape(N, rows, N, -1)
    idx = torch.arange(N)
    return jac[idx, :, idx, :]


def _as64(model: nn.Module, batch):
    m = copy.deepcopy(model).to(torch.float64)
    conv = [t.to(torch.float64) if torch.is_tensor(t) and t.is_floating_point() else t for t in batch]
    return m, conv


def block_hessian(model: nn.Module, loss_fn, batch, param_name: str) -> torch.Tensor:
    """The dense, symmetrized Hessian block d2L/dW^2 (|W| x |W|) of one small parameter W, in the model's dtype;
    ``loss_fn(prediction, target)``, ``batch = (x, y)``."""
    x, y = batch
    W = dict(model.named_parameters())[param_name].detach().clone()
    H = torch.autograd.functional.hessian(
        lambda w: loss_fn(functional_call(model, {param_name: w}, (x,)), y), W
    ).reshape(W.numel(), W.numel())
    return 0.5 * (H + H.T)


def theorem_check(
    model: nn.Module, loss_fn, batch, param_name: str, partner: str | None = None, k: int | None = None
) -> dict:
    """Hessian block d2L/dW_i^2 (dense) against the Theorem 2.1 / 2.2 lower bounds (module docstring).

    ``param_name`` is any parameter W_i (normally a Linear weight); ``partner`` the weight of an ``nn.Linear``
    W_j that every path from W_i to the prediction passes through (default: the next nn.Linear in module order).
    ``loss_fn(prediction, target)`` is the loss (mean MSE in the paper).  Works on per-sample vectors and on
    per-token layers (inputs (N, ..., in_j)).  Returns the block's sigma_max (``sigma_max_H``) and that of its
    Gauss-Newton part (``sigma_max_GN``); the paper's ``bound``/``ratio``/``vacuous``; the Remark A.3 ``topk_*``
    numbers; the ``restricted_*`` numbers and ``alignment``; ``ratio_GN`` (min over the three of GN / bound);
    ``factorization_ok``; ``residual`` = sigma_max(H - GN)."""
    model, (x, y) = _as64(model, batch)
    params = dict(model.named_parameters())
    if param_name not in params:
        raise ValueError(f"no parameter {param_name!r} in the model")
    W = params[param_name].detach()
    if W.numel() > MAX_BLOCK:
        raise ValueError(
            f"{param_name} has {W.numel()} entries: theorem_check builds its Hessian block densely "
            f"(at most {MAX_BLOCK}); check a smaller layer"
        )
    partner = partner or _default_partner(model, param_name)
    _, mj = _module_of(model, partner)
    if not isinstance(mj, nn.Linear) or partner.rsplit(".", 1)[1] != "weight":
        raise ValueError(f"partner {partner!r} must be the weight of an nn.Linear")
    Wj = mj.weight.detach()

    H = block_hessian(model, loss_fn, (x, y), param_name)
    evals = torch.linalg.eigvalsh(H)
    svals = evals.abs().sort(descending=True).values

    probe = _Probe(model, param_name, mj, x)
    with torch.no_grad():
        yhat0 = probe(W, 0.0)
    N = yhat0.shape[0]
    m = yhat0[0].numel()
    out_shape = probe.out_shape
    T = out_shape[1:-1].numel()
    if N * m * out_shape.numel() > MAX_JACOBIAN:
        raise ValueError(
            f"batch too large for theorem_check's dense per-sample Jacobians ({N} samples x {m} outputs "
            f"x {out_shape.numel()} activations > {MAX_JACOBIAN:.0e}): pass fewer samples"
        )
    zero_dj = torch.zeros(out_shape, dtype=torch.float64)
    P = _per_sample(torch.autograd.functional.jacobian(lambda d: probe(W, d), zero_dj), N, m)
    Mfull = torch.autograd.functional.jacobian(lambda w: (probe(w, zero_dj), probe.u)[1], W.clone())
    M = Mfull.reshape(N, -1, W.numel())  # N, T in_j, |W_i|
    J = torch.autograd.functional.jacobian(lambda w: probe(w, zero_dj), W.clone()).reshape(N, m, W.numel())
    Wbig = torch.kron(torch.eye(T, dtype=torch.float64), Wj)
    recon = P @ Wbig @ M
    err = float((J - recon).abs().max())
    scale = float(J.abs().max()) or 1.0
    fact_ok = err <= 1e-7 * scale + 1e-12
    if not fact_ok and err > 1e-3 * scale:
        raise ValueError(
            f"{param_name} reaches the prediction by a path that bypasses {partner} (a residual or "
            f"skip connection? |J - P W M| = {err:.3g} of |J| = {scale:.3g}): pick a partner that "
            "every path from W_i passes through"
        )

    Hout = torch.autograd.functional.hessian(lambda yh: loss_fn(yh, y), yhat0).reshape(N * m, N * m)
    c = max(float(torch.linalg.eigvalsh(0.5 * (Hout + Hout.T))[0]), 0.0)
    Jf = J.reshape(N * m, -1)
    GN = Jf.T @ Hout @ Jf
    GN = 0.5 * (GN + GN.T)
    gn_svals = torch.linalg.eigvalsh(GN).abs().sort(descending=True).values
    sigma_GN = float(gn_svals[0])
    residual = float(torch.linalg.matrix_norm(H - GN, ord=2))

    To, Ti = Wbig.shape
    k = k or min(To, Ti)
    sW = torch.linalg.svdvals(Wj)
    sWbig = sW.repeat_interleave(T)
    smax = float(sW[0])
    best = best_topk = best_r = 0.0
    align = 0.0
    for n in range(N):
        sP, sM = torch.linalg.svdvals(P[n]), torch.linalg.svdvals(M[n])
        sp = _sv(sP, To)
        best = max(best, smax * c * sp**2 * _sv(torch.linalg.svdvals(Wbig @ M[n]), To) * _sv(sM, Ti))
        inner = sum(float(sWbig[i - 1]) * _sv(sM, Ti - i + 1) for i in range(1, k + 1) if i <= sWbig.numel())
        best_topk = max(best_topk, c * sp**2 * inner**2 / k)
        VP, pmin = _range_basis(P[n], "row")
        UM, mmin = _range_basis(M[n], "col")
        if VP.shape[1] and UM.shape[1]:
            cn = float(torch.linalg.matrix_norm(VP.T @ Wbig @ UM, ord=2))
            rn = c * (pmin * cn * mmin) ** 2
            if rn > best_r:
                best_r, align = rn, cn / smax if smax > 0 else 0.0
    sigma_H = float(svals[0])
    topk_sum = float(svals[:k].sum())
    tiny = 1e-12 * max(sigma_H, 1e-30)

    def ratio(num, b):
        return num / b if b > tiny else math.inf

    gn_topk = float(gn_svals[:k].sum())
    ratios_gn = [ratio(sigma_GN, best), ratio(gn_topk, best_topk), ratio(sigma_GN, best_r)]
    return {
        "param": param_name,
        "partner": partner,
        "tokens": T,
        "sigma_max_H": sigma_H,
        "sigma_max_GN": sigma_GN,
        "residual": residual,
        "sigma_max_Wj": smax,
        "bound": best,
        "ratio": ratio(sigma_H, best),
        "vacuous": bool(best <= tiny),
        "k": k,
        "topk_sum": topk_sum,
        "topk_bound": best_topk,
        "topk_ratio": ratio(topk_sum, best_topk),
        "topk_vacuous": bool(best_topk <= tiny),
        "restricted_bound": best_r,
        "restricted_ratio": ratio(sigma_H, best_r),
        "restricted_vacuous": bool(best_r <= tiny),
        "alignment": align,
        "ratio_GN": min(ratios_gn),
        "factorization_ok": bool(fact_ok),
        "min_eig_H": float(evals[0]),
        "loss_curvature_c": c,
    }
