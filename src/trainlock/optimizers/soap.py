"""`soap`: heavyball's SOAP (Adam run in Shampoo's eigenbasis; heavyball is BSD-2).

heavyball is optional and imported lazily; compile_mode works as in psgd_kron (off on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import OPTIMIZERS, options
from .psgd_kron import heavyball_for


@dataclass
class SOAPOptions:
    """`soap` options beyond lr, weight_decay and momentum (keyword arguments of the factory)."""

    beta2: float = field(default=0.95, metadata={"help": "Adam beta2 in the rotated basis"})
    shampoo_beta: float = field(default=0.95, metadata={"help": "EMA decay of the Shampoo factor statistics"})
    precondition_frequency: int = field(
        default=10, metadata={"help": "steps between eigenbasis refreshes (the SOAP paper's 10)"}
    )
    max_precond_dim: int = field(default=2048, metadata={"help": "dims larger than this are left unrotated"})
    eps: float = field(default=1e-8, metadata={"help": "Adam epsilon"})
    compile_mode: str | None = field(
        default="auto",
        metadata={"help": "heavyball's kernel compile: 'auto' (off on CPU), None (off), or a torch.compile mode"},
    )
    compile_step: bool = field(
        default=False, metadata={"help": "True: torch.compile the whole step (GPU only; slow to start)"}
    )


def soap(
    params,
    lr,
    weight_decay=0.0,  # decoupled weight decay
    momentum=None,  # Adam beta1 (None: 0.9)
    **extra,  # the fields of SOAPOptions
):
    o = options(SOAPOptions, "soap", extra)
    params = list(params)
    hb = heavyball_for(params, o.compile_mode)
    betas = (0.9 if momentum is None else momentum, o.beta2)
    return hb.SOAP(
        params,
        lr=lr,
        betas=betas,
        shampoo_beta=o.shampoo_beta,
        eps=o.eps,
        weight_decay=weight_decay,
        precondition_frequency=o.precondition_frequency,
        max_precond_dim=o.max_precond_dim,
        compile_step=o.compile_step,
    )


OPTIMIZERS.add("soap", soap)
