"""`soap`: heavyball's SOAP (Adam run in Shampoo's eigenbasis; heavyball is BSD-2).

heavyball is optional and imported lazily; compile_mode works as in psgd_kron (off on CPU).
"""

from __future__ import annotations

from ..train.optim import OPTIMIZERS
from .psgd_kron import heavyball_for


def soap(
    params,
    lr,
    weight_decay=0.0,  # decoupled weight decay
    momentum=None,  # Adam beta1 (None: 0.9)
    beta2=0.95,  # Adam beta2 in the rotated basis
    shampoo_beta=0.95,  # EMA decay of the Shampoo factor statistics
    precondition_frequency=10,  # steps between eigenbasis refreshes (the SOAP paper's 10)
    max_precond_dim=2048,  # dims larger than this are left unrotated
    eps=1e-8,  # Adam epsilon
    compile_mode="auto",  # heavyball's kernel compile: "auto" (off on CPU), None (off), or a torch.compile mode
    compile_step=False,  # True: torch.compile the whole step (GPU only; slow to start)
):
    params = list(params)
    hb = heavyball_for(params, compile_mode)
    betas = (0.9 if momentum is None else momentum, beta2)
    return hb.SOAP(
        params, lr=lr, betas=betas, shampoo_beta=shampoo_beta, eps=eps, weight_decay=weight_decay,
        precondition_frequency=precondition_frequency, max_precond_dim=max_precond_dim,
        compile_step=compile_step,
    )


OPTIMIZERS.add("soap", soap)
