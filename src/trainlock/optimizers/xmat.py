"""`xmat`: PSGD with an X-shaped preconditioner (Pooladzandi & Li 2024, "Curvature-informed SGD
via general purpose Lie-group preconditioners"), written here from the paper's equations.

Variant: the Hessian-vector-product PSGD criterion (Li 2015), one X-matrix per parameter tensor
(flattened to n entries; entry i is paired with entry n-1-i). Per tensor and step, with g the
minibatch gradient (built with create_graph=True, so step mode "hessian"):

    Q = diag(a) + antidiag(b)      (b's centre entry is 0 when n is odd),   P = Q^T Q
    v ~ N(0, I),   h = H v + damping * v            (Hvp by differentiating g once more)
    criterion c(P) = E[h^T P h + v^T P^-1 v], minimised where P h h^T P = v v^T, i.e.
                     P = |H + damping I|^-1 (damping bounds P <= I / damping)
    first step: Q = (|v| / |h|)^(1/2) I             (P starts at the secant scale)
    u = Q h,  w = Q^-T v,  E = proj_X(u u^T - w w^T):
        diag part  dA = u*u - w*w,   anti-diag part  dB = u*rev(u) - w*rev(w)   (centre := 0)
    Q <- Q - (precond_lr / |E|_2) E Q               (Lie-group step, normalised by the exact
                                                     spectral norm of E over its 2x2 blocks)
    m <- momentum * m + (1 - momentum) * g          (momentum 0: m = g)
    theta <- theta - lr * P m  (- lr * weight_decay * theta, decoupled)

X-matrices are closed under products and inverses (each pair (i, n-1-i) is a 2x2 block), so Q
stays in the group and every product above is O(n). The preconditioner is refit every step.
"""

from __future__ import annotations

import torch

from .base import OPTIMIZERS


def _qx(a, b, x):  # Q x
    return a * x + b * x.flip(0)


def _qtx(a, b, x):  # Q^T x  (Q^T = diag(a) + antidiag(rev(b)))
    return a * x + (b * x).flip(0)


def _qtinv(a, b, v):  # Q^-T v, solving the 2x2 blocks of Q^T
    return (a.flip(0) * v - (b * v).flip(0)) / (a * a.flip(0) - b * b.flip(0))


class XMat(torch.optim.Optimizer):
    trainlock_step = "hessian"

    def __init__(self, params, lr=0.1, precond_lr=0.1, damping=1e-3, momentum=0.0, weight_decay=0.0):
        if not 0 < precond_lr < 1:
            raise ValueError(f"precond_lr must be in (0, 1), got {precond_lr}")
        defaults = {
            "lr": lr,
            "precond_lr": precond_lr,
            "damping": damping,
            "momentum": momentum,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        graphed = [p for p in params if p.grad.grad_fn is not None]
        if not params:
            return loss
        if not graphed:
            raise RuntimeError(
                "xmat needs Hessian-vector products: call loss.backward(create_graph=True) before step() "
                "(trainlock's fit does so for step mode 'hessian')"
            )
        vs = {p: torch.randn_like(p) for p in params}
        hvs = torch.autograd.grad([p.grad for p in graphed], graphed, [vs[p] for p in graphed], allow_unused=True)
        hv = {p: h for p, h in zip(graphed, hvs, strict=False) if h is not None}
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g = p.grad = p.grad.detach()  # also breaks create_graph's param/grad reference cycle
                    v = vs[p].flatten()
                    h = hv[p].flatten() + group["damping"] * v if p in hv else group["damping"] * v
                    self._fit(self.state[p], v, h, group["precond_lr"])
                    st = self.state[p]
                    m = g.flatten()
                    if group["momentum"]:
                        m = st["m"] = st.get("m", torch.zeros_like(m)).lerp_(m, 1 - group["momentum"])
                    if group["weight_decay"]:
                        p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.sub_(_qtx(st["a"], st["b"], _qx(st["a"], st["b"], m)).view_as(p), alpha=group["lr"])
        return loss

    @staticmethod
    def _fit(st: dict, v: torch.Tensor, h: torch.Tensor, mu: float) -> None:
        """One normalised Lie-group step of Q = diag(a) + antidiag(b) on the PSGD criterion."""
        if "a" not in st:
            hn = h.norm()
            scale = (v.norm() / hn).sqrt() if hn > 0 else torch.ones((), dtype=v.dtype, device=v.device)
            st["a"], st["b"] = torch.full_like(v, float(scale)), torch.zeros_like(v)
        a, b = st["a"], st["b"]
        u, w = _qx(a, b, h), _qtinv(a, b, v)
        da = u * u - w * w
        db = u * u.flip(0) - w * w.flip(0)
        if v.numel() % 2:
            db[v.numel() // 2] = 0
        # E is symmetric with 2x2 blocks [[da_i, db_i], [db_i, da_j]]: its exact spectral norm
        norm = ((da + da.flip(0)).abs() / 2 + ((da - da.flip(0)) ** 2 / 4 + db * db).sqrt()).max()
        step = mu / (norm + torch.finfo(v.dtype).tiny)
        a_new = a - step * (da * a + db * b.flip(0))  # E Q, diagonal part
        b.sub_(step * (da * b + db * a.flip(0)))  # E Q, anti-diagonal part
        a.copy_(a_new)


def xmat(
    params,
    lr,
    precond_lr=0.1,  # normalised Lie-group step of the preconditioner fit, in (0, 1)
    damping=1e-3,  # h = Hv + damping * v: bounds P <= I / damping where the curvature vanishes
    momentum=0.0,  # EMA of the gradient that P preconditions (0: the raw gradient)
    weight_decay=0.0,  # decoupled weight decay
):
    return XMat(params, lr=lr, precond_lr=precond_lr, damping=damping, momentum=momentum, weight_decay=weight_decay)


OPTIMIZERS.add("xmat", xmat)
