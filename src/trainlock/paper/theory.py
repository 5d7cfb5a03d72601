"""Section 2 of the SpecDef paper, checked numerically: Figure 1, Figure 2, Theorem 2.1.

Figure 1 (``fig1``): f(w) = 1/2 w^T H w, H = diag(lambda), lambda linearly spaced in [1, kappa]
(sigma_min fixed at 1, L = kappa, mu = 1).  w0 has equal initial loss in every eigen-direction
(w0_i = g_i / sqrt(lambda_i), |g_i| = 1), so no direction is favoured.  Step counts are the first t with
f(w_t) <= tol * f(w0).  Theory (all exact upper bounds for these methods on strongly convex quadratics):

* GD, lr = 2/(L+mu) (the optimal fixed step; the largest stable one is < 2/L):
  ||w_t|| contracts by q = (kappa-1)/(kappa+1) per step in every direction, so f_t <= q^(2t) f_0 and
  t_GD = ceil( ln(1/tol) / (2 ln((kappa+1)/(kappa-1))) ).
* GD, lr = 1/L: per direction factor 1 - lambda/L <= 1 - 1/kappa, t = ceil( ln(1/tol) / (-2 ln(1 - 1/kappa)) ).
* Nesterov, lr = 1/L, momentum beta = (sqrt(kappa)-1)/(sqrt(kappa)+1) (Nesterov 2004, Thm 2.2.3 form):
  f_t - f* <= (1 - 1/sqrt(kappa))^t (f_0 - f* + mu/2 ||w0 - w*||^2) <= 2 (1 - 1/sqrt(kappa))^t f_0, so
  t_Nes = ceil( ln(2/tol) / (-ln(1 - 1/sqrt(kappa))) ) ~ sqrt(kappa) ln(2/tol).
  The paper writes the rate as (1 - eta sqrt(kappa))^t with eta = 1/sigma_max: dimensionally wrong in
  general (eta sqrt(kappa) = sqrt(kappa)/L); it coincides with the correct factor only because mu = 1 here.
  The correct factor, implemented here, is (1 - 1/sqrt(kappa)) = (1 - sqrt(eta mu)) with eta = 1/L.

Theorems 2.1 and 2.2 (``theorem_check``, in ``trainlock.analysis.bounds``): the Hessian block of a weight W_i against
sigma_max(W_j) sigma_min(A) for a later Linear W_j, per-sample or per-token; see that module for what is proved.

Figure 2 (``fig2``): Appendix B.1 sizes, x ~ N(0, I_4) (64 samples), y ~ N(0, I_4), Xavier-uniform init,
zero biases, mean MSE, Adam lr 1e-3.  One chosen weight (the output layer W_j) gets sigma_max multiplied by s
(SVD, scale the top singular value, reconstruct); we count Adam steps until loss <= tol * mean(y^2)
(relative to the zero predictor's loss) and run ``theorem_check`` on the block of the layer feeding it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..analysis.bounds import block_hessian, theorem_check

# ------------------------------------------------------------------ Figure 1


def _quad_steps(lam: np.ndarray, w0: np.ndarray, lr: float, beta: float, tol: float, max_steps: int) -> int:
    f0 = 0.5 * float(np.sum(lam * w0 * w0))
    w, prev = w0.copy(), w0.copy()
    for t in range(1, max_steps + 1):
        y = w + beta * (w - prev)  # beta = 0: plain GD
        prev, w = w, y - lr * lam * y
        if 0.5 * float(np.sum(lam * w * w)) <= tol * f0:
            return t
    return max_steps


def fig1_theory(kappa: float, tol: float) -> dict:
    q = (kappa - 1) / (kappa + 1)
    return {
        "gd_opt_theory": math.ceil(math.log(1 / tol) / (-2 * math.log(q))) if kappa > 1 else 1,
        "gd_1L_theory": math.ceil(math.log(1 / tol) / (-2 * math.log(1 - 1 / kappa))) if kappa > 1 else 1,
        "nesterov_theory": math.ceil(math.log(2 / tol) / (-math.log(1 - 1 / math.sqrt(kappa)))) if kappa > 1 else 1,
    }


def fig1(
    kappas=(1e1, 3e1, 1e2, 3e2, 1e3, 3e3, 1e4),
    dim: int = 20,
    tol: float = 1e-6,
    max_steps: int = 500_000,
    seed: int = 0,
) -> list[dict]:
    """Measured vs theoretical steps to f <= tol f(w0) on 1/2 w^T H w, spectrum in [1, kappa] (module doc)."""
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=dim)
    rows = []
    for kappa in kappas:
        lam = np.linspace(1.0, float(kappa), dim)
        w0 = signs / np.sqrt(lam)
        L, mu = float(kappa), 1.0
        beta = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
        row = {
            "kappa": float(kappa),
            "dim": dim,
            "tol": tol,
            "lr_gd_opt": 2 / (L + mu),
            "lr_gd_1L": 1 / L,
            "lr_nesterov": 1 / L,
            "momentum": beta,
            "gd_opt_measured": _quad_steps(lam, w0, 2 / (L + mu), 0.0, tol, max_steps),
            "gd_1L_measured": _quad_steps(lam, w0, 1 / L, 0.0, tol, max_steps),
            "nesterov_measured": _quad_steps(lam, w0, 1 / L, beta, tol, max_steps),
        }
        row.update(fig1_theory(kappa, tol))
        rows.append(row)
    return rows


# ------------------------------------------------------------------ Figure 2 models (Appendix B.1)


def _xavier(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


class MLP(nn.Module):
    """4 Linear layers, hidden 8, ReLU: 4 -> 8 -> 8 -> 8 -> 4.  Checked pair: net.4 (W_i) -> net.6 (W_j)."""

    scaled, checked = "net.6.weight", "net.4.weight"

    def __init__(self, d: int = 4, h: int = 8, out: int = 4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, out)
        )
        _xavier(self)

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    """Two Conv1d(kernel 3, padding 1) over the 4 features as a length-4 signal (channels 1 -> 4 -> 4, Tanh;
    the paper does not name the conv activation), then a 2-layer MLP head 16 -> 8 -> 4 with Tanh."""

    scaled, checked = "head.2.weight", "head.0.weight"

    def __init__(self, d: int = 4, ch: int = 4, h: int = 8, out: int = 4):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(1, ch, 3, padding=1), nn.Tanh(), nn.Conv1d(ch, ch, 3, padding=1), nn.Tanh())
        self.head = nn.Sequential(nn.Linear(ch * d, h), nn.Tanh(), nn.Linear(h, out))
        _xavier(self)

    def forward(self, x):
        return self.head(self.conv(x.unsqueeze(1)).flatten(1))


class Transformer(nn.Module):
    """Encoder-only, one pre-LN block, 1 head: the 4 features are 2 tokens of 2 (sequence length 2), embedded
    to dim 4 (+ learned positions); attention, MLP 4 -> 8 -> 4 (ReLU); readout flatten(8) -> 8 -> 4 with ReLU
    (our choice: the paper does not say how the block is read out)."""

    scaled, checked = "readout.2.weight", "readout.0.weight"

    def __init__(self, d: int = 4, seq: int = 2, emb: int = 4, h: int = 8, out: int = 4):
        super().__init__()
        self.seq = seq
        self.embed = nn.Linear(d // seq, emb)
        self.pos = nn.Parameter(torch.zeros(seq, emb))
        self.ln1, self.ln2 = nn.LayerNorm(emb), nn.LayerNorm(emb)
        self.q, self.k, self.v, self.o = (nn.Linear(emb, emb) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(emb, h), nn.ReLU(), nn.Linear(h, emb))
        self.readout = nn.Sequential(nn.Linear(seq * emb, h), nn.ReLU(), nn.Linear(h, out))
        _xavier(self)

    def forward(self, x):
        z = self.embed(x.view(x.shape[0], self.seq, -1)) + self.pos
        a = self.ln1(z)
        att = torch.softmax(self.q(a) @ self.k(a).transpose(1, 2) / math.sqrt(a.shape[-1]), dim=-1)
        z = z + self.o(att @ self.v(a))
        z = z + self.mlp(self.ln2(z))
        return self.readout(z.flatten(1))


ARCHS = {"mlp": MLP, "cnn": CNN, "transformer": Transformer}


def scale_sigma_max(weight: torch.Tensor, s: float) -> None:
    """In place: W = U diag(sigma) V^T with sigma_1 -> s * sigma_1 (scaled reconstruction after SVD)."""
    with torch.no_grad():
        U, S, Vh = torch.linalg.svd(weight, full_matrices=False)
        S = S.clone()
        S[0] = S[0] * s
        weight.copy_(U @ torch.diag(S) @ Vh)


# ------------------------------------------------------------------ Figure 2


def fig2_data(seed: int, n: int = 64, d: int = 4, out: int = 4):
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(n, d, generator=g), torch.randn(n, out, generator=g)


def iterations_to_converge(model: nn.Module, x, y, tol: float, max_iters: int, lr: float = 1e-3) -> int:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    target = tol * float((y * y).mean())
    for it in range(max_iters):
        loss = nn.functional.mse_loss(model(x), y)
        if loss.item() <= target:
            return it
        opt.zero_grad()
        loss.backward()
        opt.step()
    return max_iters


def fig2(
    seeds=(0, 1, 2),
    scales=(1, 2, 4, 8, 16),
    max_iters: int = 20_000,
    tol: float = 0.9,
    archs=("mlp", "cnn", "transformer"),
) -> list[dict]:
    """Per architecture, seed and scale s: sigma_max(W_j) *= s; Adam steps to loss <= tol * mean(y^2);
    Theorem 2.1 check on the block of the layer feeding W_j (at the scaled initialization)."""
    rows = []
    for arch in archs:
        for seed in seeds:
            x, y = fig2_data(seed)
            for s in scales:
                torch.manual_seed(seed)
                model = ARCHS[arch]()
                W = dict(model.named_parameters())[model.scaled]
                scale_sigma_max(W, float(s))
                chk = theorem_check(model, nn.functional.mse_loss, (x, y), model.checked, partner=model.scaled)
                torch.manual_seed(seed)
                iters = iterations_to_converge(model, x, y, tol, max_iters)
                rows.append(
                    {
                        "arch": arch,
                        "seed": seed,
                        "scale": float(s),
                        "sigma_max_W": chk["sigma_max_Wj"],
                        "iterations": iters,
                        "converged": iters < max_iters,
                        **{
                            k: chk[k]
                            for k in (
                                "sigma_max_H",
                                "bound",
                                "ratio",
                                "vacuous",
                                "k",
                                "topk_sum",
                                "topk_bound",
                                "topk_ratio",
                                "topk_vacuous",
                                "restricted_bound",
                                "restricted_ratio",
                                "restricted_vacuous",
                                "alignment",
                                "ratio_GN",
                                "factorization_ok",
                                "min_eig_H",
                            )
                        },
                    }
                )
    return rows


# ------------------------------------------------------------------ Theorem 2.2 (Transformer weights)

# Theorem 2.2's per-token weights of the Figure 2 Transformer, each with the weight whose Hessian block it bounds
# (a W_i every path of which to the prediction passes through W_j), or None where no such W_i exists: the
# residual stream bypasses W_Q, W_K, W_V and W_1, so for them only the measured scaling is reported.
THEOREM22_PAIRS = {
    "q.weight": None,
    "k.weight": None,
    "v.weight": None,
    "o.weight": "v.weight",
    "mlp.0.weight": None,
    "mlp.2.weight": "mlp.0.weight",
}
_PAIR_KEYS = (
    "sigma_max_H",
    "sigma_max_GN",
    "bound",
    "ratio",
    "vacuous",
    "topk_ratio",
    "topk_vacuous",
    "restricted_bound",
    "restricted_ratio",
    "restricted_vacuous",
    "alignment",
    "ratio_GN",
    "factorization_ok",
)


def own_block_sigma_max(model: nn.Module, loss_fn, batch, param_name: str) -> float:
    """sigma_max of the dense Hessian block d2L/dW^2 of one (small) parameter."""
    return float(torch.linalg.eigvalsh(block_hessian(model, loss_fn, batch, param_name)).abs().max())


def theorem22(
    seeds=(0, 1, 2), scales=(1, 2, 4, 8, 16), max_iters: int = 20_000, tol: float = 0.9, weights=tuple(THEOREM22_PAIRS)
) -> list[dict]:
    """Per Transformer weight W (attention W_Q/W_K/W_V/W_O, MLP W_1/W_2), seed and scale s: sigma_max(W) *= s;
    measured: sigma_max of W's own Hessian block, the full Hessian's lambda_max (Lanczos), Adam steps to
    converge (as ``fig2``); and where a paired block exists (``THEOREM22_PAIRS``) the ``theorem_check`` numbers."""
    from ..linalg.curvature import hessian_eigenvalues

    mse = nn.functional.mse_loss
    rows = []
    for w in weights:
        if w not in THEOREM22_PAIRS:
            raise ValueError(f"unknown Transformer weight {w!r}: expected one of {sorted(THEOREM22_PAIRS)}")
        for seed in seeds:
            x, y = fig2_data(seed)
            for s in scales:
                torch.manual_seed(seed)
                model = Transformer()
                scale_sigma_max(dict(model.named_parameters())[w], float(s))
                row = {
                    "weight": w,
                    "seed": seed,
                    "scale": float(s),
                    "sigma_max_W": float(torch.linalg.matrix_norm(model.get_parameter(w).detach(), ord=2)),
                    "own_block_sigma": own_block_sigma_max(model, mse, (x, y), w),
                    "hessian_lambda_max": float(
                        hessian_eigenvalues(model, lambda m, b: mse(m(b[0]), b[1]), (x, y), k=1)[0]
                    ),
                    "checked": THEOREM22_PAIRS[w] or "-",
                }
                if THEOREM22_PAIRS[w]:
                    chk = theorem_check(model, mse, (x, y), THEOREM22_PAIRS[w], partner=w)
                    row.update({k: chk[k] for k in _PAIR_KEYS})
                else:
                    row.update({k: float("nan") for k in _PAIR_KEYS})
                torch.manual_seed(seed)
                row["iterations"] = iterations_to_converge(model, x, y, tol, max_iters)
                row["converged"] = row["iterations"] < max_iters
                rows.append(row)
    return rows
