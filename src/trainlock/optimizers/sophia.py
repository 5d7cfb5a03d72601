"""`sophia`: pytorch_optimizer's SophiaH (Liu et al. 2023, Hutchinson variant; Apache-2.0).

Momentum divided by an EMA of a Hutchinson Hessian-diagonal estimate, clipped per coordinate to
[-p, p], times lr. Like AdaHessian it differentiates p.grad inside step(): step mode "hessian"
(fit() calls loss.backward(create_graph=True)); same hooks as adahessian.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .adahessian import hutchinson_stepped, pytorch_optimizer
from .base import OPTIMIZERS, options


@dataclass
class SophiaOptions:
    """`sophia` options beyond lr, weight_decay and momentum (keyword arguments of the factory)."""

    beta2: float = field(default=0.99, metadata={"help": "EMA decay of the Hessian-diagonal estimate"})
    p: float = field(
        default=0.01,
        metadata={"help": "clip bound on each coordinate of momentum / hessian (the step is at most lr * p)"},
    )
    update_period: int = field(
        default=10, metadata={"help": "steps between Hutchinson estimates (the Sophia paper's k = 10)"}
    )
    num_samples: int = field(default=1, metadata={"help": "Hutchinson probe vectors per estimate"})
    eps: float = field(default=1e-12, metadata={"help": "floor of the Hessian estimate in the denominator"})


def sophia(
    params,
    lr,
    weight_decay=0.0,  # decoupled weight decay
    momentum=None,  # beta1 of the gradient momentum (None: 0.96, the library default)
    **extra,  # the fields of SophiaOptions
):
    o = options(SophiaOptions, "sophia", extra)
    po = pytorch_optimizer()
    opt = po.SophiaH(
        params,
        lr=lr,
        betas=(0.96 if momentum is None else momentum, o.beta2),
        weight_decay=weight_decay,
        p=o.p,
        update_period=o.update_period,
        num_samples=o.num_samples,
        eps=o.eps,
    )
    return hutchinson_stepped(opt, "sophia")


OPTIMIZERS.add("sophia", sophia)
