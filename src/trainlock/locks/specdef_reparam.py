"""`specdef-reparam`: the one-shot, function-preserving SpecDef variant (arXiv 2602.18868).

For each chosen nn.Linear with W = U S V^T (out x in), the top-k singular values are multiplied by
`factor` and a bias-free square compensation layer C (out x out) is inserted after the layer so
that C W~ = W:

    W~ = U (T S) V^T = W + (factor - 1) U_k S_k V_k^T,     T = diag(factor x k, 1, ..., 1)
    C  = I - (1 - 1/factor) U_k U_k^T

The paper writes C = U S (T S)^-1 U^T. With the thin U (out x r, r = min(out, in)) that is a
projector onto range(W) whenever out > in: rank-deficient, so C W~ = W still holds but C has no
inverse and a bias cannot be moved through it. The C used here is the same map on range(U) and
the identity on its orthogonal complement, hence invertible: C^-1 = I + (factor - 1) U_k U_k^T.

Bias: the deformed layer keeps a bias b~ = C^-1 b = b + (factor - 1) U_k U_k^T b, and C has none,
so C (W~ x + b~) = W x + b. (The alternative, the bias after C, would need a custom module; this
way both parts stay plain nn.Linear layers, which is also the pair the red team's `merge`
transform folds.) The function is unchanged in exact arithmetic; in floating point the inflated
component is stored with relative error eps, so outputs move by about factor * eps relative
(~1e-3 for factor 1e4 in float32, ~1e-12 in float64); `apply` records ||C W~ - W|| / ||W|| per
layer as `fold_error` (about 2e-4 for factor 1e4 in float32) and raises ValueError when the
dtype cannot reach sigma_max(W~) / sigma_max(C W~) >= factor * (1 - tol).

Insertion: `Compensated(layer, C)` replaces the layer in its parent; the original (deformed) layer
is `.layer` and C is `.comp`, so the parameters are `<name>.layer.weight`, `<name>.layer.bias`,
`<name>.comp.weight`. `structure_meta(model)` lists the wrappers (names and shapes) and
`restore_structure(model, meta)` re-inserts empty wrappers into a freshly built architecture so a
saved state_dict loads.

Threat model: release-time, but removable at no cost: anyone holding the weights folds C into
W~ (C @ W~ is one matrix multiplication, and the red team's `merge` transform does exactly that)
and gets the original W back. The certificate states the structure, not a fine-tuning cost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import option
from ..models.compensated import Compensated, restore_structure, structure_meta
from ..models.compensated import get_module as _get
from ..models.compensated import set_module as _set
from ..tasks import Task
from ..train import clone_model
from .base import BaseLock, Certificate, Locked, register_lock


@dataclass
class SpecDefReparamConfig:
    layers: str | None = option(
        None, "regex (re.search) on module names, or on '<name>.weight'; default every nn.Linear"
    )
    k: int = option(1, "singular values inflated per layer")
    factor: float = option(1e4, "multiplier of the top-k singular values")
    tol: float = option(1e-3, "relative tolerance of the certificates")

    def __post_init__(self):
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"specdef-reparam: k must be an integer >= 1, got {self.k!r}")
        if not (isinstance(self.factor, (int, float)) and self.factor > 1):
            raise ValueError(f"specdef-reparam: factor must be a number > 1, got {self.factor!r}")
        if not 0 <= self.tol < 1:
            raise ValueError(f"specdef-reparam: tol must be in [0, 1), got {self.tol}")
        if self.layers is not None:
            try:
                re.compile(self.layers)
            except re.error as e:
                raise ValueError(f"specdef-reparam: layers {self.layers!r} is not a valid regex ({e})") from None


def select_linears(model: nn.Module, pattern: str | None) -> list[str]:
    """Names of the nn.Linear modules to deform (not parts of existing Compensated wrappers)."""
    if any(isinstance(m, Compensated) for m in model.modules()):
        raise ValueError(
            "specdef-reparam: the model already has compensation layers (Compensated modules); "
            "apply the lock to the unlocked model"
        )
    rx = re.compile(pattern) if pattern else None
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n]
    chosen = [n for n in linears if rx is None or rx.search(n) or rx.search(f"{n}.weight")]
    if not chosen:
        raise ValueError(
            "specdef-reparam: no nn.Linear layer to deform"
            + (
                f" matching layers={pattern!r}; the model's Linear layers: {linears[:8]}"
                if linears and rx
                else " (the model has no nn.Linear)"
            )
        )
    return chosen


@torch.no_grad()
def deform(layer: nn.Linear, k: int, factor: float) -> Compensated:
    """The Compensated pair for one Linear (computed in float64, stored in the layer's dtype)."""
    W = layer.weight.detach().double()
    U, _S, _Vh = torch.linalg.svd(W, full_matrices=False)
    Uk = U[:, :k]  # (out, k)
    Wt = W + (factor - 1.0) * Uk @ (Uk.T @ W)  # = W + (f - 1) U_k S_k V_k^T
    C = torch.eye(W.shape[0], dtype=torch.float64, device=W.device) - (1.0 - 1.0 / factor) * Uk @ Uk.T
    new = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    new.to(device=layer.weight.device, dtype=layer.weight.dtype)
    new.weight.copy_(Wt.to(layer.weight.dtype))
    if layer.bias is not None:
        b = layer.bias.detach().double()
        new.bias.copy_((b + (factor - 1.0) * Uk @ (Uk.T @ b)).to(layer.bias.dtype))  # C^-1 b
        new.bias.requires_grad_(layer.bias.requires_grad)
    new.weight.requires_grad_(layer.weight.requires_grad)
    comp = nn.Linear(layer.out_features, layer.out_features, bias=False)
    comp.to(device=layer.weight.device, dtype=layer.weight.dtype)
    comp.weight.copy_(C.to(layer.weight.dtype))
    return Compensated(new, comp)


def _product(w: Compensated) -> torch.Tensor:
    return w.comp.weight.detach().double() @ w.layer.weight.detach().double()


@dataclass
class SpecDefReparamRecord:
    recorded: dict | None = option(
        None,
        "{name: {in, out, bias, sigma: top-k of C W~, fold_error: "
        "||C W~ - W||_2 / ||W||_2 of the stored weights (the dtype's rounding)}}",
    )


@register_lock("specdef-reparam", SpecDefReparamConfig, example={"factor": 100.0})
class SpecDefReparamLock(BaseLock):
    record_cls = SpecDefReparamRecord

    def apply(self, model: nn.Module, retain: Task | None = None, *, progress: bool = False, checkpoint=None) -> Locked:
        """A copy with the chosen Linear layers deformed and compensated; `retain` is not needed."""
        names = select_linears(model, self.cfg.layers)
        for n in names:
            m = _get(model, n)
            if self.cfg.k > min(m.in_features, m.out_features):
                raise ValueError(
                    f"specdef-reparam: k={self.cfg.k} exceeds min(out, in) = "
                    f"{min(m.in_features, m.out_features)} of layer {n!r}"
                )
        locked = clone_model(model)
        recorded = {}
        f = float(self.cfg.factor)
        for n in names:
            W = _get(locked, n).weight.detach().double()
            w = deform(_get(locked, n), self.cfg.k, f)
            _set(locked, n, w)
            P = _product(w)
            sigma = torch.linalg.svdvals(P)
            ratio = float(torch.linalg.matrix_norm(w.layer.weight.detach().double(), ord=2) / sigma[0])
            if not ratio >= f * (1 - self.cfg.tol):  # the dtype cannot hold this factor
                raise ValueError(
                    f"specdef-reparam: layer {n!r} in {w.layer.weight.dtype} reaches sigma_max(W~)/sigma_max(C W~) "
                    f"= {ratio:.6g}, below factor*(1-tol) = {f * (1 - self.cfg.tol):.6g}; use a smaller factor "
                    f"or a wider dtype (float64)"
                )
            err = float(torch.linalg.matrix_norm(P - W, ord=2) / torch.linalg.matrix_norm(W, ord=2).clamp_min(1e-300))
            recorded[n] = {
                "in": w.in_features,
                "out": w.out_features,
                "bias": w.layer.bias is not None,
                "sigma": [float(s) for s in sigma[: self.cfg.k]],
                "fold_error": err,
            }
        return Locked(locked, SpecDefReparamRecord(recorded))

    def certify(self, model: nn.Module, record: SpecDefReparamRecord) -> list[Certificate]:
        if not record.recorded:
            raise ValueError("specdef-reparam: nothing recorded; apply the lock first")
        f, tol, k = float(self.cfg.factor), self.cfg.tol, self.cfg.k
        present, problems, ratios, deviations = [], {}, {}, {}
        for n, rec in record.recorded.items():
            try:
                w = _get(model, n)
            except AttributeError:
                problems[n] = "missing"
                continue
            shaped = (
                isinstance(w, Compensated)
                and isinstance(w.layer, nn.Linear)
                and isinstance(w.comp, nn.Linear)
                and tuple(w.layer.weight.shape) == (rec["out"], rec["in"])
                and tuple(w.comp.weight.shape) == (rec["out"], rec["out"])
            )
            if not shaped:
                inner = (
                    f"(layer={w.layer.__class__.__name__}, comp={w.comp.__class__.__name__})"
                    if isinstance(w, Compensated)
                    else ""
                )
                problems[n] = (
                    f"expected Compensated(Linear({rec['in']}, {rec['out']}), Linear({rec['out']}, "
                    f"{rec['out']})), found {w.__class__.__name__}{inner}"
                )
                continue
            if w.comp.bias is not None:
                problems[n] = "the compensation layer has a bias (moved there by a re-factorization)"
            else:
                present.append(n)
            with torch.no_grad():
                s_prod = torch.linalg.svdvals(_product(w))
                s_def = torch.linalg.matrix_norm(w.layer.weight.detach().double(), ord=2)
            ratios[n] = float(s_def / s_prod[0]) if s_prod[0] > 0 else float("inf")
            want = torch.tensor(rec["sigma"], dtype=torch.float64)
            deviations[n] = float(((s_prod[:k] - want).abs() / want.abs().clamp_min(1e-30)).max())
        unmeasured = [n for n in record.recorded if n not in ratios]
        for n in unmeasured:  # a layer that cannot be measured fails both value certificates
            ratios.setdefault(n, 0.0)
            deviations.setdefault(n, 1.0)
        common = {
            "threat_model": "release-time",
            "adversary_can_remove": True,
            "removal": (
                "free: fold C into W~ (one matrix multiplication, W = C W~, b = C b~; the red team's `merge` "
                "transform does this) and the original layer is back, with its original spectrum; "
                "the compensation layer is not part of the function, only of its factorization"
            ),
        }
        n_rec = len(record.recorded)
        certs = [
            Certificate(
                lock=self.name,
                invariant="number of recorded layers present as Compensated(Linear W~, bias-free Linear C) wrappers",
                measured=float(len(present)),
                required=float(n_rec),
                relation="==",
                proof_of_gap="the inflated factor W~ exists only as long as its wrapper does",
                preservation="training changes values, not the module tree",
                method="module tree walk: types and shapes of <name>.layer and <name>.comp",
                details={"present": present, "problems": problems},
                **common,
            ),
            Certificate(
                lock=self.name,
                invariant="min over wrappers of sigma_max(W~) / sigma_max(C W~)",
                measured=min(ratios.values()),
                required=f * (1 - tol),
                relation=">=",
                proof_of_gap=(
                    f"the deformed factor's top singular value is {f:g} times that of the function's own map C W~, "
                    f"so gradients through W~ see a {f:g}-times inflated spectrum (SpecDef's fine-tuning cost), "
                    f"while the composed function is unchanged"
                ),
                preservation="none claimed: fine-tuning W~ and C jointly can shrink the ratio; this measures the state",
                method="exact SVD in float64 of W~ and of the product C W~",
                details={"ratios": ratios, "factor": f, "tol": tol, "unmeasured": unmeasured},
                **common,
            ),
            Certificate(
                lock=self.name,
                invariant=f"max over wrappers of the relative deviation of the top-{k} singular values of C W~ from "
                f"those recorded at lock time",
                measured=max(deviations.values()),
                required=tol,
                relation="<=",
                proof_of_gap="C W~ is the layer's effective map; an unchanged spectrum shows the composed layer is the "
                "one that was locked (up to rotations, which the spectrum does not see)",
                preservation="none claimed: any update of W~ or C may change the product",
                method="exact SVD in float64 of C W~",
                details={
                    "deviations": deviations,
                    "recorded": {n: r["sigma"] for n, r in record.recorded.items()},
                    "fold_error": {n: r.get("fold_error") for n, r in record.recorded.items()},
                },
                **common,
            ),
        ]
        return certs


__all__ = [
    "Compensated",
    "SpecDefReparamConfig",
    "SpecDefReparamLock",
    "deform",
    "restore_structure",
    "select_linears",
    "structure_meta",
]
