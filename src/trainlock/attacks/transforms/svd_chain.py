"""`svd-chain`: split every locked weight into m trainable factors that share its spectrum, train, fold.

Each selected layer's weight, read as the matrix W (out, in) (a convolution kernel as
(out, in*kh*kw)), has the thin SVD W = U S V^T with r = min(out, in) singular values. It becomes the
product of m factors (option `m`, default 2), applied in order A_1 first:

    W = A_m ... A_2 A_1,   A_1 = S^(1/m) V^T (r x in),   A_i = S^(1/m) (r x r, 1 < i < m),
                           A_m = U S^(1/m) (out x r),

i.e. the rotations of the middle factors are the identity and every factor carries the m-th root of
the spectrum. The bias stays on the last factor. The product is the original W (up to float
rounding of the SVD, done in float64), so the transform is function-preserving at initialisation.

Layers: nn.Linear becomes `SVDChain(Linear(in, r), Linear(r, r) x (m-2), Linear(r, out))`.
nn.Conv1d/2d/3d becomes a convolution with r output channels and the original kernel size, stride,
padding, dilation and padding mode (A_1 on the reshaped kernel), followed by 1x1 convolutions for the
other factors (exact: a 1x1 convolution is a channel mix, which commutes with the spatial sum).
Grouped convolutions are skipped with a reason in `stats["skipped"]`.

Why this helps an attacker. With G = dL/dW, the gradient with respect to a factor is G carried into
the singular basis and scaled by the OTHER factors: for m = 2, dL/dA_1 = A_2^T G = S^(1/2) U^T G and
dL/dA_2 = G A_1^T = G V S^(1/2); in general each factor's gradient is scaled by S^((m-1)/m), the
other m-1 factors, instead of acting on the deformed W itself. Each trainable factor has spectrum
S^(1/m): a lock that inflates sigma_max to a huge value leaves each factor only sigma_max^(1/m), so a
step of a fixed size (Adam, clipped SGD) changes the effective weight by about m * lr *
sigma^((m-1)/m), which relative to W's scale sigma is m * lr / sigma^(1/m) instead of lr / sigma: the
inflated spectrum no longer shrinks the attacker's relative step. This is the structure-aware
attack of the SpecDef paper (Rosati et al., arXiv 2602.18868), which restores fast convergence at a
linear increase in size; whether it beats a given lock is what running the attack measures.

Size. A layer with rank r = min(out, in) goes from out*in parameters to r*in + (m-2) r^2 + out*r,
an increase of exactly (m-1) r^2 per layer (r*(in+out) - in*out = r^2 since r = min(in, out)):
linear in the number of factors m and in the number of layers (reported in `stats`).

After training, `outcome.fold(model)` (also `fold_svd_chains`) multiplies the factors back into one
layer of the ORIGINAL type with the original parameter names (`weight`, `bias`), so the folded
model's `state_dict()` has the keys and shapes of the model before the transform.
`finetune(head="auto")` still finds a head: the last nn.Linear is the chain's last factor A_m, and
swapping it for a fresh Linear(r, classes) folds into a Linear(in, classes).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .base import TRANSFORMS, TransformContext, TransformOutcome
from .inject import _CONVS, count_params, fold_wrappers, replace_module, select_or_skip


class SVDChain(nn.Sequential):
    """The factors A_1 ... A_m of one layer, applied in order. `template` (a parameter-free copy
    of the original layer on the meta device, kept out of the state_dict) gives the fold its type."""

    def __init__(self, factors: list[nn.Module], template: nn.Module):
        super().__init__(*factors)
        self.template = (template,)  # a tuple: not registered as a submodule, not moved by .to()

    @torch.no_grad()
    def fold(self) -> nn.Module:
        """One layer of the original type with weight = A_m ... A_1 and the last factor's bias."""
        factors = list(self)
        first = factors[0].weight
        prod = first.reshape(first.shape[0], -1)
        for f in factors[1:]:
            prod = f.weight.reshape(f.weight.shape[0], -1) @ prod
        last = factors[-1]
        mod = copy.deepcopy(self.template[0])
        mod.to_empty(device=first.device)
        flags = {k: p.requires_grad for k, p in self.template[0].named_parameters(recurse=False)}
        shape = (prod.shape[0], *first.shape[1:])
        mod.weight = nn.Parameter(
            prod.reshape(shape).to(first.dtype).contiguous(), requires_grad=flags.get("weight", True)
        )
        bias = getattr(last, "bias", None)
        mod.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=flags.get("bias", True))
        if isinstance(mod, nn.Linear):
            mod.out_features = prod.shape[0]
        else:
            mod.out_channels = prod.shape[0]
        return mod


@torch.no_grad()
def build_chain(mod: nn.Module, m: int) -> SVDChain:
    """The m-factor SVD chain of a Linear or ConvNd (groups == 1) layer, equal to it at init."""
    w = mod.weight
    dev, dt = w.device, w.dtype
    out = w.shape[0]
    mat = w.detach().reshape(out, -1).double()
    U, S, Vh = torch.linalg.svd(mat, full_matrices=False)
    r = S.numel()
    root = S ** (1.0 / m)
    a_first = root[:, None] * Vh  # (r, in)
    a_last = U * root[None, :]  # (out, r)
    has_bias = mod.bias is not None
    if isinstance(mod, nn.Linear):
        factors: list[nn.Module] = [nn.Linear(mat.shape[1], r, bias=False, device=dev, dtype=dt)]
        factors += [nn.Linear(r, r, bias=False, device=dev, dtype=dt) for _ in range(m - 2)]
        factors.append(nn.Linear(r, out, bias=has_bias, device=dev, dtype=dt))
    else:
        conv = _CONVS[w.dim() - 2]
        factors = [
            conv(
                mod.in_channels,
                r,
                mod.kernel_size,
                stride=mod.stride,
                padding=mod.padding,
                dilation=mod.dilation,
                bias=False,
                padding_mode=mod.padding_mode,
                device=dev,
                dtype=dt,
            )
        ]
        factors += [conv(r, r, 1, bias=False, device=dev, dtype=dt) for _ in range(m - 2)]
        factors.append(conv(r, out, 1, bias=has_bias, device=dev, dtype=dt))
    mats = [a_first] + [torch.diag(root)] * (m - 2) + [a_last]
    for f, a in zip(factors, mats, strict=True):
        f.weight.copy_(a.reshape(f.weight.shape).to(dt))
    if has_bias:
        factors[-1].bias.copy_(mod.bias.detach())
    return SVDChain(factors, copy.deepcopy(mod).to("meta"))


def fold_svd_chains(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold every `SVDChain` in `model` back into one layer of the original type."""
    return fold_wrappers(model, SVDChain, inplace)


class SVDChainTransform:
    """Factory options: `m` (factors per layer, >= 2; default 2), `which` (regex on module names;
    default: every lockable Linear/Conv). All factors are trainable."""

    function_preserving = True

    def __init__(self, m: int = 2, which: str | None = None):
        if int(m) < 2:
            raise ValueError(f"svd-chain needs m >= 2 factors, got {m}")
        self.m = int(m)
        self.which = which

    def __call__(self, model: nn.Module, ctx: TransformContext | None = None) -> TransformOutcome:
        chosen, skipped = select_or_skip(model, self.which, "svd-chain: nothing to factor")
        before = count_params(model)
        layers = {}
        for name, mod in chosen:
            chain = build_chain(mod, self.m)
            old = sum(p.numel() for p in mod.parameters())
            new = sum(p.numel() for p in chain.parameters())
            rank = chain[0].weight.shape[0]
            layers[name or "<model>"] = {
                "shape": list(mod.weight.shape),
                "rank": rank,
                "params_before": old,
                "params_after": new,
                "added": new - old,
            }
            model = replace_module(model, name, chain)
        after = count_params(model)
        added = after - before
        stats = {
            "m": self.m,
            "layers": layers,
            "skipped": skipped,
            "params_before": before,
            "params_added": added,
            "params_after": after,
            "relative_increase": added / max(1, before),
        }
        note = (
            f"factored {len(layers)} layer(s) into {self.m} SVD factors sharing S^(1/{self.m}): +{added} parameters "
            f"({stats['relative_increase']:.1%})" + (f"; skipped {len(skipped)}" if skipped else "")
        )
        return TransformOutcome(model=model, applied=True, note=note, fold=fold_svd_chains, stats=stats)


TRANSFORMS.add("svd-chain", SVDChainTransform)
