"""The red team's optimizers: importing this package registers each one in trainlock.optim.OPTIMIZERS.

Optional dependencies (heavyball, pytorch_optimizer) are imported inside the factories, so this
import stays cheap.
"""

from . import (  # noqa: F401  (each import registers one optimizer)
    adagrad,
    adahessian,
    kfac,
    lbfgs,
    muon,
    nesterov,
    psgd_kron,
    rmsprop,
    soap,
    sophia,
    xmat,
)
