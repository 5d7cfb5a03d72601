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

Theorem 2.1 (``theorem_check``): the paper's proof (Appendix A.1) treats a 2-layer ReLU MLP, block
d2L/dW1^2 = D W2^T W2 D (x) x x^T.  What we implement and can justify, for a Linear layer i (weight W_i)
whose output z_i reaches the prediction only through a later Linear layer j (u = input of j, v = W_j u + b):

  B_n = dyhat_n/dz_i = P_n W_j Q_n,   P_n = dyhat_n/dv_n,  Q_n = du_n/dz_i  (both computed numerically).
  Gauss-Newton part GN = J^T H_out J >= c sum_n (B_n^T B_n) (x) (a_n a_n^T),   c = lambda_min(H_out)
  (c = 2/(N m) for mean MSE), a_n the input of layer i.  Every term is PSD, so
  sigma_max(GN) >= c ||a_n||^2 sigma_max(B_n)^2 for every n, and by the paper's Lemma A.1 chain
  sigma_max(Q^T W^T G W Q) >= sigma_min(Q) sigma_max(W_j) sigma_min(G) sigma_out(W_j Q),  G = P^T P:

  bound = max_n  sigma_max(W_j) * sigma_min(A_n),
  sigma_min(A_n) := c ||a_n||^2 sigma_{out_j}(P_n)^2 sigma_{out_j}(W_j Q_n) sigma_{in_j}(Q_n)

  where sigma_k(M) is the k-th largest singular value and 0 if k > min(M.shape) (the convention under which
  sigma_max(XY) >= sigma_max(X) sigma_min(Y) is true for rectangular factors; the paper leaves this implicit).
  The Hessian block is H = GN + R; R = 0 when the net is piecewise linear in W_i (ReLU), so then
  sigma_max(H) >= bound is rigorous.  With Tanh / LayerNorm / attention downstream R != 0 and the bound only
  covers GN; we still report the ratio against the true Hessian.  Looseness: the paper's bound is linear in
  sigma_max(W_j), but a second W_j hides inside sigma_min(A) (sigma_out(W_j Q)); and sigma_min(Q) = 0 as soon
  as one ReLU is off for a sample (and sigma_out(P) = 0 whenever the output dim < out_j), i.e. the bound is
  vacuous for most samples of a ReLU net -- we flag that (``vacuous``) and report Remark A.3's top-k form:
  sum_{i<=k} sigma_i(XY) >= sum_{i<=k} sigma_i(X) sigma_{n-i+1}(Y)  (n = inner dimension), giving
  sum_{i<=k} sigma_i(H) >= max_n c ||a_n||^2 sigma_{out_j}(P_n)^2 (sum_{i<=k} sigma_i(W_j) sigma_{n-i+1}(Q_n))^2 / k
  (Ky Fan + Cauchy-Schwarz; rigorous when R = 0).  Non-zero only if Q_n has fewer than k zero singular values.

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
from torch.func import functional_call

# ------------------------------------------------------------------ Figure 1


def _quad_steps(lam: np.ndarray, w0: np.ndarray, lr: float, beta: float, tol: float, max_steps: int) -> int:
    f0 = 0.5 * float(np.sum(lam * w0 * w0))
    w, prev = w0.copy(), w0.copy()
    for t in range(1, max_steps + 1):
        y = w + beta * (w - prev)          # beta = 0: plain GD
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


def fig1(kappas=(1e1, 3e1, 1e2, 3e2, 1e3, 3e3, 1e4), dim: int = 20, tol: float = 1e-6,
         max_steps: int = 500_000, seed: int = 0) -> list[dict]:
    """Measured vs theoretical steps to f <= tol f(w0) on 1/2 w^T H w, spectrum in [1, kappa] (module doc)."""
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=dim)
    rows = []
    for kappa in kappas:
        lam = np.linspace(1.0, float(kappa), dim)
        w0 = signs / np.sqrt(lam)
        L, mu = float(kappa), 1.0
        beta = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
        row = {"kappa": float(kappa), "dim": dim, "tol": tol,
               "lr_gd_opt": 2 / (L + mu), "lr_gd_1L": 1 / L, "lr_nesterov": 1 / L, "momentum": beta,
               "gd_opt_measured": _quad_steps(lam, w0, 2 / (L + mu), 0.0, tol, max_steps),
               "gd_1L_measured": _quad_steps(lam, w0, 1 / L, 0.0, tol, max_steps),
               "nesterov_measured": _quad_steps(lam, w0, 1 / L, beta, tol, max_steps)}
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
        self.net = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                                 nn.Linear(h, h), nn.ReLU(), nn.Linear(h, out))
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


# ------------------------------------------------------------------ Theorem 2.1


def _sv(M: torch.Tensor, k: int) -> float:
    """k-th largest singular value (1-based); 0 if k > min(M.shape)."""
    s = torch.linalg.svdvals(M)
    return float(s[k - 1]) if k <= s.numel() else 0.0


def _module_of(model: nn.Module, param_name: str) -> tuple[str, nn.Module]:
    mod_name = param_name.rsplit(".", 1)[0]
    return mod_name, model.get_submodule(mod_name)


def theorem_check(model: nn.Module, loss_fn, batch, param_name: str, partner: str | None = None,
                  k: int | None = None) -> dict:
    """Hessian block d2L/dW_i^2 (dense, numerical) vs the Theorem 2.1 bound (module docstring).

    ``param_name`` is a Linear weight; ``partner`` (W_j) is the next nn.Linear in module order by default.
    Returns sigma_max (of the block), bound, ratio (inf when vacuous), vacuous, and the Remark A.3 top-k
    numbers (topk_sum, topk_bound, topk_ratio), factorization_ok (B_n == P_n W_j Q_n numerically)."""
    x, y = batch
    W = dict(model.named_parameters())[param_name]
    mi_name, mi = _module_of(model, param_name)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if partner is None:
        names = [n for n, _ in linears]
        if mi_name not in names or names.index(mi_name) + 1 >= len(names):
            raise ValueError(f"{param_name}: no later nn.Linear to pair with")
        partner = names[names.index(mi_name) + 1] + ".weight"
    mj_name, mj = _module_of(model, partner)
    Wj = mj.weight.detach()

    # dense Hessian block over W_i only
    def loss_of(w):
        return loss_fn(functional_call(model, {param_name: w}, (x,)), y)
    Hb = torch.autograd.functional.hessian(loss_of, W.detach().clone()).reshape(W.numel(), W.numel())
    Hb = 0.5 * (Hb + Hb.T)
    evals = torch.linalg.eigvalsh(Hb)
    svals = evals.abs().sort(descending=True).values
    sigma_H = float(svals[0])

    # numerical factors via additive probes on the outputs of layers i and j
    cap: dict = {}

    def forward(di, dj):
        hooks = [mi.register_forward_hook(lambda m, inp, out: (cap.__setitem__("a", inp[0]), out + di)[1]),
                 mj.register_forward_hook(lambda m, inp, out: (cap.__setitem__("u", inp[0]), out + dj)[1])]
        try:
            return model(x)
        finally:
            for h in hooks:
                h.remove()

    with torch.no_grad():
        yhat0 = forward(0.0, 0.0)
    a = cap["a"].detach()
    if a.dim() != 2 or cap["u"].dim() != 2:
        raise ValueError("theorem_check needs layers acting on per-sample vectors (2-D activations)")
    N, m = yhat0.shape
    zi, zj = torch.zeros(N, mi.out_features), torch.zeros(N, mj.out_features)
    idx = torch.arange(N)
    P = torch.autograd.functional.jacobian(lambda dj: forward(zi, dj), zj)[idx, :, idx, :]      # N, m, out_j
    Q = torch.autograd.functional.jacobian(lambda di: (forward(di, zj), cap["u"])[1], zi)[idx, :, idx, :]
    B = torch.autograd.functional.jacobian(lambda di: forward(di, zj), zi)[idx, :, idx, :]      # N, m, out_i
    fact_ok = bool(torch.allclose(B, P @ Wj @ Q, atol=1e-5, rtol=1e-4))
    c = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(
        lambda yh: loss_fn(yh, y), yhat0).reshape(N * m, N * m))[0])
    c = max(c, 0.0)

    out_j, in_j = Wj.shape
    k = k or min(out_j, in_j)
    sW = torch.linalg.svdvals(Wj)
    smax_Wj = float(sW[0])
    best, best_topk = 0.0, 0.0
    for n in range(N):
        an2 = float(a[n] @ a[n])
        sp = _sv(P[n], out_j)
        sminA = c * an2 * sp ** 2 * _sv(Wj @ Q[n], out_j) * _sv(Q[n], in_j)
        best = max(best, smax_Wj * sminA)
        inner = sum(float(sW[i - 1]) * _sv(Q[n], in_j - i + 1) for i in range(1, k + 1) if i <= sW.numel())
        best_topk = max(best_topk, c * an2 * sp ** 2 * inner ** 2 / k)
    topk_sum = float(svals[:k].sum())
    vac = best <= 1e-12 * max(sigma_H, 1e-30)
    return {"param": param_name, "partner": partner, "sigma_max_H": sigma_H, "sigma_max_Wj": smax_Wj,
            "bound": best, "ratio": sigma_H / best if not vac else float("inf"), "vacuous": bool(vac),
            "k": k, "topk_sum": topk_sum, "topk_bound": best_topk,
            "topk_ratio": topk_sum / best_topk if best_topk > 0 else float("inf"),
            "topk_vacuous": bool(best_topk <= 1e-12 * max(topk_sum, 1e-30)),
            "factorization_ok": fact_ok, "min_eig_H": float(evals[0]), "loss_curvature_c": c}


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


def fig2(seeds=(0, 1, 2), scales=(1, 2, 4, 8, 16), max_iters: int = 20_000, tol: float = 0.9,
         archs=("mlp", "cnn", "transformer")) -> list[dict]:
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
                rows.append({"arch": arch, "seed": seed, "scale": float(s),
                             "sigma_max_W": chk["sigma_max_Wj"], "iterations": iters,
                             "converged": iters < max_iters,
                             **{k: chk[k] for k in ("sigma_max_H", "bound", "ratio", "vacuous", "k", "topk_sum",
                                                    "topk_bound", "topk_ratio", "topk_vacuous",
                                                    "factorization_ok", "min_eig_H")}})
    return rows
