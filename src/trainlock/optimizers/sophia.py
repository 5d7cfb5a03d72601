"""`sophia`: pytorch_optimizer's SophiaH (Liu et al. 2023, Hutchinson variant; Apache-2.0).

Momentum divided by an EMA of a Hutchinson Hessian-diagonal estimate, clipped per coordinate to
[-p, p], times lr. Like AdaHessian it differentiates p.grad inside step(): step mode "hessian"
(fit() calls loss.backward(create_graph=True)); same hooks as adahessian.
"""

from __future__ import annotations

from ..train.optim import OPTIMIZERS
from .adahessian import hutchinson_stepped, pytorch_optimizer


def sophia(
    params,
    lr,
    weight_decay=0.0,  # decoupled weight decay
    momentum=None,  # beta1 of the gradient momentum (None: 0.96, the library default)
    beta2=0.99,  # EMA decay of the Hessian-diagonal estimate
    p=0.01,  # clip bound on each coordinate of momentum / hessian (the step is at most lr * p)
    update_period=10,  # steps between Hutchinson estimates (the Sophia paper's k = 10)
    num_samples=1,  # Hutchinson probe vectors per estimate
    eps=1e-12,  # floor of the Hessian estimate in the denominator
):
    po = pytorch_optimizer()
    opt = po.SophiaH(
        params, lr=lr, betas=(0.96 if momentum is None else momentum, beta2), weight_decay=weight_decay,
        p=p, update_period=update_period, num_samples=num_samples, eps=eps,
    )
    return hutchinson_stepped(opt, "sophia")


OPTIMIZERS.add("sophia", sophia)
