"""`psgd-kron`: heavyball's PSGD Kron (Kronecker-factored PSGD preconditioner; heavyball is BSD-2).

heavyball is optional (`pip install 'trainlock[redteam]'`) and imported only when the optimizer is
built. heavyball torch.compiles its kernels through one process-wide switch,
`heavyball.utils.compile_mode` (default "max-autotune-no-cudagraphs", read at every step; None runs
them eagerly). `compile_mode="auto"` sets it to None when any parameter is on the CPU (compiling there
costs long waits for no gain) and otherwise leaves the switch as it is (heavyball's default unless
changed earlier in the process). On an H100 that default
autotunes every new matrix shape: minutes before the first steps of a small model, so pass
compile_mode=None for short GPU runs too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import OPTIMIZERS, options

_INSTALL_HINT = "heavyball is needed for this optimizer: pip install 'trainlock[redteam]'"


def heavyball_for(params: list, compile_mode="auto"):
    """Import heavyball (clear ImportError if missing) and set its process-wide kernel compile mode."""
    try:
        import heavyball
        import heavyball.utils
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    if compile_mode == "auto":
        tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
        if any(t.device.type == "cpu" for t in tensors):
            heavyball.utils.compile_mode = None  # heavyball's decorators then run every kernel eagerly
    else:
        heavyball.utils.compile_mode = compile_mode
    return heavyball


@dataclass
class PSGDKronOptions:
    """`psgd_kron` options beyond lr, weight_decay and momentum (keyword arguments of the factory)."""

    precond_lr: float = field(default=0.1, metadata={"help": "step size of the preconditioner fit on its Lie group"})
    max_size_triangular: int = field(
        default=2048, metadata={"help": "dims larger than this get a diagonal factor instead of a triangular one"}
    )
    merge_dims: bool = field(
        default=False, metadata={"help": "True: merge tensor dims into (at most) a matrix before factoring"}
    )
    compile_mode: str | None = field(
        default="auto",
        metadata={"help": "heavyball's kernel compile: 'auto' (off on CPU), None (off), or a torch.compile mode"},
    )
    compile_step: bool = field(
        default=False, metadata={"help": "True: torch.compile the whole step (GPU only; slow to start)"}
    )


def psgd_kron(
    params,
    lr,
    weight_decay=0.0,  # decoupled weight decay
    momentum=None,  # beta of the gradient EMA fed to the preconditioner (None: heavyball's 0.9)
    **extra,  # the fields of PSGDKronOptions
):
    o = options(PSGDKronOptions, "psgd_kron", extra)
    params = list(params)
    hb = heavyball_for(params, o.compile_mode)
    betas = (0.9 if momentum is None else momentum, 0.999)
    return hb.PSGDKron(
        params,
        lr=lr,
        betas=betas,
        weight_decay=weight_decay,
        precond_lr=o.precond_lr,
        max_size_triangular=o.max_size_triangular,
        merge_dims=o.merge_dims,
        compile_step=o.compile_step,
    )


OPTIMIZERS.add("psgd-kron", psgd_kron)
