"""`adahessian`: pytorch_optimizer's AdaHessian (Yao et al. 2021; pytorch-optimizer is Apache-2.0).

AdaHessian is Adam with the squared gradient replaced by a Hutchinson estimate of the squared
Hessian diagonal. Its step() draws z and computes z * (H z) itself, by differentiating p.grad
again (torch.autograd.grad(grads, params, z)); so p.grad must carry a graph: step mode "hessian",
where fit() calls loss.backward(create_graph=True). A pre-step hook gives a clear error when the
gradients carry no graph, and a post-step hook detaches p.grad, breaking the param -> grad -> graph
-> param reference cycle that create_graph leaves behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import OPTIMIZERS, options

_INSTALL_HINT = "pytorch-optimizer is needed for this optimizer: pip install 'trainlock[redteam]'"


def pytorch_optimizer():
    try:
        import pytorch_optimizer
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    return pytorch_optimizer


def hutchinson_stepped(opt, name: str):
    """Mark `opt` for step mode "hessian" and add the graph check / grad-detach hooks."""

    def check(o, args, kwargs):  # hooks get the optimizer as `o` (no reference cycle through opt)
        grads = [p.grad for g in o.param_groups for p in g["params"] if p.grad is not None]
        due = o.param_groups[0].get("step", 0) % o.update_period == 0  # Hessian refreshed this step
        if due and kwargs.get("hessian") is None and grads and all(g.grad_fn is None for g in grads):
            raise RuntimeError(
                f"{name} differentiates the gradient: call loss.backward(create_graph=True) before "
                "step() (trainlock's fit does so for step mode 'hessian')"
            )

    def detach(o, args, kwargs):
        for g in o.param_groups:
            for p in g["params"]:
                if p.grad is not None and p.grad.grad_fn is not None:
                    p.grad = p.grad.detach()

    opt.register_step_pre_hook(check)
    opt.register_step_post_hook(detach)
    opt.trainlock_step = "hessian"
    return opt


@dataclass
class AdaHessianOptions:
    """`adahessian` options beyond lr, weight_decay and momentum (keyword arguments of the factory)."""

    beta2: float = field(default=0.999, metadata={"help": "decay of the squared Hessian-diagonal average"})
    hessian_power: float = field(
        default=1.0, metadata={"help": "exponent k of the denominator (sqrt of the averaged D^2)^k, in (0, 1]"}
    )
    update_period: int = field(default=1, metadata={"help": "steps between Hutchinson estimates"})
    num_samples: int = field(default=1, metadata={"help": "Hutchinson probe vectors per estimate"})
    eps: float = field(default=1e-4, metadata={"help": "added to the denominator (the AdaHessian paper's value)"})


def adahessian(
    params,
    lr,
    weight_decay=0.0,  # decoupled weight decay
    momentum=None,  # beta1 of the gradient average (None: 0.9)
    **extra,  # the fields of AdaHessianOptions
):
    o = options(AdaHessianOptions, "adahessian", extra)
    po = pytorch_optimizer()
    opt = po.AdaHessian(
        params,
        lr=lr,
        betas=(0.9 if momentum is None else momentum, o.beta2),
        weight_decay=weight_decay,
        hessian_power=o.hessian_power,
        update_period=o.update_period,
        num_samples=o.num_samples,
        hessian_distribution="rademacher",
        eps=o.eps,
    )
    return hutchinson_stepped(opt, "adahessian")


OPTIMIZERS.add("adahessian", adahessian)
