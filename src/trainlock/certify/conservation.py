"""The conservation certificate for original -> modified (e.g. base -> locked): what the change kept.

The conservation note (RESOLVE-Conservation, ML form) claims three properties of an admissible
modification. What this module measures for each, and where it departs from the note:

1. Preservation. The note states it as InfoContent(theta') >= (1 - eps) InfoContent(theta) with
   InfoContent = I(X;Z) - I(Z;Y|X). That quantity is not something we can measure: mutual
   information between high-dimensional inputs and representations has no reliable estimator at
   this scale, and for a deterministic network Z = f(X) the term I(Z;Y|X) is 0 while I(X;Z) is
   infinite for continuous X. We certify instead what can be measured and what matters to a user
   of the model:

   * the authorized accuracy drop acc(original) - acc(modified) on held-out test inputs, <= epsilon;
   * output-distribution closeness: the mean over held-out inputs x of
     KL(p_original(.|x) || p_modified(.|x)), and the total-variation distance
     TV(x) = sup over label sets A of |P(A|x) - Q(A|x)| = (1/2) sum_y |p(y|x) - q(y|x)|.
     Pinsker's inequality gives TV(x) <= sqrt(KL(x)/2) per input, and averaged over inputs,
     by Jensen (sqrt is concave), E[TV] <= E[sqrt(KL/2)] <= sqrt(E[KL]/2). So the Pinsker bound
     bounds the total-variation distance between the two models' predictive distributions, and
     therefore how much the probability of ANY decision (any set of labels: "predict class 3",
     "predict one of the harmful classes") can change. The measured mean TV is reported beside
     the bound; the bound is a check, the measured TV is the sharper number.
   * per-layer feature drift ||f_l(theta') - f_l(theta)||_2 (mean over inputs of the L2 norm of
     the difference of layer l's outputs), absolute and relative to the mean ||f_l(theta)||.

   The note's Pinsker corollary "Acc(student) >= Acc(teacher) - sqrt(2 eps)" is loose and, as
   stated, not right: Pinsker gives sqrt(eps/2) (a factor 2 tighter), and it bounds the change of
   the *expected* accuracy of the predictive distribution (the "soft accuracy" E_x p(y_x|x), the
   accuracy of a classifier that samples its answer), not of the argmax accuracy: an argmax can
   flip under an arbitrarily small TV when two classes are nearly tied. Both are reported:
   |soft_acc(original) - soft_acc(modified)| <= mean TV <= sqrt(mean KL / 2) is checked.

2. Progress and 3. Countability. The note assumes a uniform improvement delta_mod > 0 per
   modification and concludes N <= (L(theta_0) - L*)/delta_mod. A uniform delta is not something
   training guarantees (the SGD descent lemma's eta/2 ||grad L||^2 vanishes near a minimum, so its
   "O(1/(eta eps^2))" needs ||grad L|| >= eps at every step). What we can state: given the
   per-epoch objective values L_0, ..., L_T of a run, delta = min_t (L_{t-1} - L_t) is the smallest
   observed improvement; if delta > 0 and L >= L* (a known lower bound: 0 for a non-negative loss
   such as cross-entropy), then any run of epochs each improving by at least delta has at most
   N <= (L_0 - L*)/delta epochs, and the T observed epochs satisfy T <= N. When delta <= 0 (some
   epoch did not improve) no bound follows, and the certificate says so. Note that SpecDef's own
   objective alpha*retain - (1-alpha)*mean_topk_sigma is unbounded below (the spectral term grows
   without limit), so no L* exists for it; use its retain_loss (cross-entropy, L* = 0), the default
   key for per-epoch dicts.

`conservation_certificate` returns a JSON-ready dict; store it as meta["conservation"] when saving,
and `trainlock.certify.verify` re-checks its numbers for internal consistency with `check_conservation`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import option
from ..tasks import Task, for_model

__all__ = [
    "check_conservation",
    "conservation_certificate",
    "feature_drift",
    "kl_tv",
    "pinsker_bound",
    "progress_bound",
]

KIND = "conservation"
DEFAULT_OBJECTIVE_KEYS = ("objective", "retain_loss", "loss")
_TOL = 1e-9  # relative slack for float round-off in the re-checks


def pinsker_bound(kl: float) -> float:
    """sqrt(KL/2): an upper bound on the total-variation distance (Pinsker's inequality)."""
    return math.sqrt(max(float(kl), 0.0) / 2.0)


def kl_tv(logits_p: torch.Tensor, logits_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row KL(p || q) and TV(p, q) = (1/2) sum |p - q| of softmax(logits), in float64."""
    if logits_p.shape != logits_q.shape:
        raise ValueError(f"logit shapes differ: {tuple(logits_p.shape)} vs {tuple(logits_q.shape)}")
    lp = F.log_softmax(logits_p.double(), dim=-1)
    lq = F.log_softmax(logits_q.double(), dim=-1)
    p, q = lp.exp(), lq.exp()
    terms = torch.where(p > 0, p * (lp - lq), torch.zeros_like(p))
    kl = terms.sum(-1).clamp_min(0.0)  # >= 0 exactly; round-off can give -1e-17
    tv = 0.5 * (p - q).abs().sum(-1)
    return kl, tv


def _default_layers(model: nn.Module) -> list[str]:
    """Each top-level child and each Linear / Conv module, in module order, without repeats."""
    names: list[str] = []
    top = {name for name, _ in model.named_children()}
    for name, mod in model.named_modules():
        if name and (name in top or isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))):
            names.append(name)
    return names


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                return o
    return None


def _norms(t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """The 2-norm of each input's output (over `dims`; the whole row for a (N,) output), as float64 on the CPU."""
    if not dims:
        return t.abs().double().cpu()
    return torch.linalg.vector_norm(t, dim=dims).double().cpu()


@torch.no_grad()
def feature_drift(
    original: nn.Module,
    modified: nn.Module,
    x: torch.Tensor,
    layers: Sequence[str] | None = None,
    batch_size: int | None = None,
) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Per-layer drift, plus both models' logits on `x` (one pass each).

    Returns ({layer: {"drift", "ref_norm", "relative"}}, logits_original, logits_modified), where
    drift = mean over inputs of ||f_l(theta')(x) - f_l(theta)(x)||_2 (each output flattened per
    input), ref_norm = mean over inputs of ||f_l(theta)(x)||_2 and relative = drift / ref_norm.
    """
    if batch_size is None:  # every hooked layer's output is held for both models; large image batches are slower on CPU
        batch_size = 32
    mods_o, mods_m = dict(original.named_modules()), dict(modified.named_modules())
    if layers is None:  # by default, the layers both models have as the same kind of module (a lock may swap some)
        layers = [n for n in _default_layers(original) if n in mods_m and type(mods_m[n]) is type(mods_o[n])]
    layers = list(layers)
    missing = [n for n in layers if n not in mods_o or n not in mods_m]
    if missing:
        raise ValueError(f"layers not found in both models: {missing}")
    sums = {n: [0.0, 0.0] for n in layers}
    acts: dict[str, dict[str, torch.Tensor]] = {"o": {}, "m": {}}

    def hook(side: str, name: str):
        def fn(_mod, _inp, out):
            t = _first_tensor(out)
            if t is not None:  # kept as it is (no copy); half precision widened so the norms stay accurate
                acts[side][name] = t.detach().float() if t.dtype in (torch.float16, torch.bfloat16) else t.detach()

        return fn

    handles = [mods_o[n].register_forward_hook(hook("o", n)) for n in layers]
    handles += [mods_m[n].register_forward_hook(hook("m", n)) for n in layers]
    modes = original.training, modified.training
    original.eval(), modified.eval()
    dev_o = next(original.parameters()).device
    dev_m = next(modified.parameters()).device
    out_o, out_m = [], []
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size]
            acts["o"].clear(), acts["m"].clear()
            out_o.append(original(xb.to(dev_o)).float().cpu())
            out_m.append(modified(xb.to(dev_m)).float().cpu())
            for n in layers:
                a, b = acts["o"].get(n), acts["m"].get(n)
                if a is None or b is None:
                    continue
                if a.shape != b.shape:
                    raise ValueError(f"layer {n!r}: output shapes differ ({tuple(a.shape)} vs {tuple(b.shape)})")
                # per-input norms over every other axis, in the activations' own dtype (float32: relative error
                # about 1e-6, 6x faster than widening each activation to float64), summed in float64
                b = b.to(a.device)  # the two models may sit on different devices
                dims = tuple(range(1, a.dim()))
                sums[n][0] += float(_norms(b - a, dims).sum())
                sums[n][1] += float(_norms(a, dims).sum())
    finally:
        for h in handles:
            h.remove()
        original.train(modes[0]), modified.train(modes[1])
    n_x = max(1, len(x))
    drift = {}
    for n in layers:
        d, r = sums[n][0] / n_x, sums[n][1] / n_x
        drift[n] = {"drift": d, "ref_norm": r, "relative": d / r if r > 0 else (0.0 if d == 0 else math.inf)}
    return drift, torch.cat(out_o), torch.cat(out_m)


def _objective_series(history, objective_key: str | None) -> tuple[list[float], str | None]:
    if not history:
        return [], objective_key
    if all(isinstance(h, (int, float)) for h in history):
        return [float(h) for h in history], objective_key or "objective"
    if not all(isinstance(h, dict) for h in history):
        raise ValueError("history must be a list of numbers (objective per epoch) or of per-epoch dicts")
    key = objective_key or next((k for k in DEFAULT_OBJECTIVE_KEYS if all(k in h for h in history)), None)
    if key is None:
        raise ValueError(f"history dicts have none of {DEFAULT_OBJECTIVE_KEYS}; pass objective_key=")
    if not all(key in h for h in history):
        raise ValueError(f"not every history entry has {key!r}")
    return [float(h[key]) for h in history], key


def progress_bound(objective: Sequence[float], lower_bound: float = 0.0) -> dict:
    """Minimum per-epoch improvement delta and the count bound N <= (L0 - L*)/delta.

    `objective` is L_0, ..., L_T (one value per epoch; L_0 may be the value before training).
    Returns {"objective", "lower_bound", "epochs" (T), "improvements", "delta", "n_bound", "holds",
    "reason"}; n_bound is None (and holds False) when delta <= 0 or fewer than two values.
    """
    obj = [float(v) for v in objective]
    L_star = float(lower_bound)
    out = {
        "objective": obj,
        "lower_bound": L_star,
        "epochs": max(0, len(obj) - 1),
        "improvements": [],
        "delta": None,
        "n_bound": None,
        "holds": False,
        "reason": "",
    }
    if len(obj) < 2:
        out["reason"] = "fewer than two objective values: no per-epoch improvement to measure, no bound follows"
        return out
    if not all(math.isfinite(v) for v in obj):
        out["reason"] = "non-finite objective values: no bound follows"
        return out
    imp = [a - b for a, b in itertools.pairwise(obj)]
    delta = min(imp)
    out.update(improvements=imp, delta=delta)
    if delta <= 0:
        worst = imp.index(delta) + 1
        out["reason"] = (
            f"delta = {delta:.6g} <= 0: epoch {worst} did not improve the objective, so no bound "
            f"N <= (L0 - L*)/delta follows"
        )
        return out
    if min(obj) < L_star:
        out["reason"] = (
            f"the objective went below the stated lower bound L* = {L_star:g} (min {min(obj):.6g}); "
            f"L* is wrong, so no bound follows"
        )
        return out
    n_bound = (obj[0] - L_star) / delta
    out.update(n_bound=n_bound, holds=out["epochs"] <= n_bound * (1 + _TOL) + _TOL)
    out["reason"] = (
        f"every epoch improved by >= delta = {delta:.6g}; with L >= L* = {L_star:g}, at most "
        f"N <= ({obj[0]:.6g} - {L_star:g})/delta = {n_bound:.6g} such epochs; observed {out['epochs']}"
    )
    return out


@dataclass
class ConservationConfig:
    """What the conservation certificate measures and requires."""

    epsilon: float = option(0.01, "the certificate holds when the accuracy drop is at most this")
    max_samples: int = option(2000, "test inputs measured (a fixed random subset)")
    seed: int = option(0, "picks that subset")
    lower_bound: float = option(0.0, "L*: a lower bound of the objective, for the progress bound")
    layers: tuple | None = option(None, "module names whose feature drift is measured (default: every leaf layer)")
    batch_size: int | None = option(
        None, "inputs per forward pass (default: 32; larger image batches are slower on a CPU)"
    )


def conservation_certificate(
    original: nn.Module,
    modified: nn.Module,
    task: Task,
    history: list | None = None,
    objective_key: str | None = None,
    config: ConservationConfig | None = None,
) -> dict:
    """The conservation certificate for `original` -> `modified` on `task`'s held-out test split.

    Measured on at most `config.max_samples` test inputs (a fixed random subset, `config.seed`):
    accuracy drop (holds when <= config.epsilon), mean/max KL(p_original || p_modified), mean/max TV
    beside the Pinsker bound sqrt(mean KL / 2) (which bounds the mean TV: how much the probability
    of any decision can change), soft accuracies, per-layer feature drift, and, given `history`
    (per-epoch objective values, or per-epoch dicts read at `objective_key`, default "objective",
    then "retain_loss", then "loss"), the progress bound N <= (L0 - L*)/delta with L* =
    `config.lower_bound`. See the module docstring for what each number means and where the conservation
    note is corrected. `holds` is True when the accuracy drop is within epsilon, the Pinsker
    and soft-accuracy checks pass, and the progress bound holds where one follows (when delta <= 0
    no bound is claimed: progress["n_bound"] is None and progress["reason"] says why).
    """
    c = config or ConservationConfig()
    epsilon, lower_bound = c.epsilon, c.lower_bound
    task = for_model(task, original)
    sub = task.subset(n_test=c.max_samples, seed=c.seed)
    x, y = sub.x_test, sub.y_test
    if len(y) == 0:
        raise ValueError(f"task {task.name!r} has no test inputs")
    drift, lo, lm = feature_drift(original, modified, x, layers=c.layers, batch_size=c.batch_size)
    if lo.shape != lm.shape:
        raise ValueError(f"the models' outputs differ in shape: {tuple(lo.shape)} vs {tuple(lm.shape)}")
    kl, tv = kl_tv(lo, lm)
    kl_mean, kl_max = float(kl.mean()), float(kl.max())
    tv_mean, tv_max = float(tv.mean()), float(tv.max())
    bound = pinsker_bound(kl_mean)
    ok_o = ((lo.argmax(1) == y) & torch.isfinite(lo).all(1)).double()
    ok_m = ((lm.argmax(1) == y) & torch.isfinite(lm).all(1)).double()
    acc_o, acc_m = float(ok_o.mean()), float(ok_m.mean())
    soft_o = float(F.softmax(lo.double(), 1).gather(1, y[:, None]).mean())
    soft_m = float(F.softmax(lm.double(), 1).gather(1, y[:, None]).mean())
    drop = acc_o - acc_m
    cert = {
        "kind": KIND,
        "task": task.name,
        "n_samples": len(y),
        "epsilon": float(epsilon),
        "accuracy": {"original": acc_o, "modified": acc_m, "drop": drop, "holds": drop <= epsilon},
        "kl": {"mean": kl_mean, "max": kl_max},
        "tv": {
            "mean": tv_mean,
            "max": tv_max,
            "pinsker_bound": bound,
            "pinsker_bound_max": pinsker_bound(kl_max),
            "holds": tv_mean <= bound * (1 + _TOL) + _TOL,
        },
        "soft_accuracy": {
            "original": soft_o,
            "modified": soft_m,
            "diff": soft_o - soft_m,
            "holds": abs(soft_o - soft_m) <= tv_mean * (1 + _TOL) + _TOL,
        },
        "feature_drift": drift,
        "progress": None,
        "method": (
            "held-out test inputs; KL and TV of softmax outputs in float64 averaged over inputs; Pinsker: "
            "E[TV] <= sqrt(E[KL]/2) (Jensen); drift: mean over inputs of the L2 norm of the change of each "
            "layer's output (forward hooks), relative to the mean norm of the original's output"
        ),
    }
    if history is not None:
        series, key = _objective_series(history, objective_key)
        cert["progress"] = {"key": key, **progress_bound(series, lower_bound)}
    prog = cert["progress"]
    cert["holds"] = bool(
        cert["accuracy"]["holds"]
        and cert["tv"]["holds"]
        and cert["soft_accuracy"]["holds"]
        and (prog is None or prog["n_bound"] is None or prog["holds"])
    )
    return cert


def _close(a: float, b: float, rel: float = 1e-9, abs_: float = 1e-12) -> bool:
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_)


def check_conservation(cert: dict) -> list[dict]:
    """Re-check a stored conservation certificate's numbers for internal consistency.

    Returns rows {"subject", "measured", "required", "holds", "reason"}: KL >= 0 and TV in [0, 1];
    the stored Pinsker bound equals sqrt(mean KL / 2) and bounds the mean TV (and sqrt(max KL / 2)
    bounds the max TV); |soft accuracy change| <= mean TV; the accuracy drop equals original -
    modified, is within epsilon, and the stored flag agrees; for progress, delta is the minimum of
    the stored objective's improvements, N bound = (L0 - L*)/delta, and observed epochs <= N (or,
    when delta <= 0, that no bound is claimed). A malformed certificate gives one failing row.
    """
    rows: list[dict] = []

    def row(subject, measured, required, holds, reason):
        rows.append(
            {"subject": subject, "measured": measured, "required": required, "holds": bool(holds), "reason": reason}
        )

    try:
        kl, tv, acc, eps = cert["kl"], cert["tv"], cert["accuracy"], float(cert["epsilon"])
        kl_mean, kl_max = float(kl["mean"]), float(kl["max"])
        tv_mean, tv_max = float(tv["mean"]), float(tv["max"])
        stored_bound = float(tv["pinsker_bound"])
    except (KeyError, TypeError, ValueError) as e:
        row("conservation", None, None, False, f"malformed conservation certificate: {type(e).__name__}: {e}")
        return rows

    ranges_ok = (
        kl_mean >= 0
        and kl_max >= kl_mean * (1 - _TOL) - _TOL
        and 0 <= tv_mean <= 1
        and 0 <= tv_max <= 1
        and tv_max >= tv_mean * (1 - _TOL) - _TOL
    )
    row(
        "ranges",
        {"kl_mean": kl_mean, "kl_max": kl_max, "tv_mean": tv_mean, "tv_max": tv_max},
        "0 <= KL, 0 <= TV <= 1, mean <= max",
        ranges_ok,
        "KL and TV in range" if ranges_ok else "KL or TV out of range, or a mean above its max",
    )

    expect = pinsker_bound(kl_mean)
    same = _close(stored_bound, expect)
    row(
        "pinsker bound",
        stored_bound,
        expect,
        same,
        f"stored bound {stored_bound:.6g} {'==' if same else '!='} sqrt(mean KL / 2) = sqrt({kl_mean:.6g}/2) "
        f"= {expect:.6g}",
    )
    ok = tv_mean <= expect * (1 + _TOL) + _TOL
    row(
        "pinsker",
        tv_mean,
        expect,
        ok,
        f"mean TV {tv_mean:.6g} {'<=' if ok else '>'} sqrt(mean KL / 2) = {expect:.6g}"
        + ("" if ok else ": impossible (Pinsker + Jensen), the stored numbers are inconsistent"),
    )
    expect_max = pinsker_bound(kl_max)
    ok = tv_max <= expect_max * (1 + _TOL) + _TOL
    row(
        "pinsker (max)",
        tv_max,
        expect_max,
        ok,
        f"max TV {tv_max:.6g} {'<=' if ok else '>'} sqrt(max KL / 2) = {expect_max:.6g}"
        + ("" if ok else ": impossible (Pinsker per input), the stored numbers are inconsistent"),
    )

    soft = cert.get("soft_accuracy")
    if soft is not None:
        try:
            diff = float(soft["original"]) - float(soft["modified"])
            ok = abs(diff) <= tv_mean * (1 + _TOL) + _TOL and _close(diff, float(soft.get("diff", diff)))
            row(
                "soft accuracy",
                abs(diff),
                tv_mean,
                ok,
                f"|soft accuracy change| {abs(diff):.6g} {'<=' if ok else 'not <='} mean TV {tv_mean:.6g}",
            )
        except (KeyError, TypeError, ValueError) as e:
            row("soft accuracy", None, None, False, f"malformed soft_accuracy: {e}")

    try:
        a_o, a_m, drop = float(acc["original"]), float(acc["modified"]), float(acc["drop"])
    except (KeyError, TypeError, ValueError) as e:
        row("accuracy drop", None, eps, False, f"malformed accuracy entry: {e}")
        a_o = a_m = drop = None
    if drop is not None:
        if not _close(drop, a_o - a_m):
            row(
                "accuracy drop",
                drop,
                a_o - a_m,
                False,
                f"stored drop {drop:.6g} != original {a_o:.6g} - modified {a_m:.6g} = {a_o - a_m:.6g}",
            )
        else:
            within = drop <= eps
            flag = acc.get("holds")
            if flag is not None and bool(flag) != within:
                row(
                    "accuracy drop",
                    drop,
                    eps,
                    False,
                    f"stored holds={flag} but drop {drop:.6g} {'<=' if within else '>'} epsilon {eps:g}",
                )
            else:
                n = cert.get("n_samples")
                on = f" on {n:,} test samples of {cert.get('task')}" if isinstance(n, int) else ""
                row(
                    "accuracy drop",
                    drop,
                    eps,
                    within,
                    f"authorized accuracy{on} {a_o:.4f} -> {a_m:.4f}: drop {drop:.6g} {'<=' if within else '>'} "
                    f"epsilon {eps:g}",
                )

    prog = cert.get("progress")
    if prog is not None:
        try:
            redo = progress_bound(prog["objective"], prog.get("lower_bound", 0.0))
        except (KeyError, TypeError, ValueError) as e:
            row("progress", None, None, False, f"malformed progress entry: {e}")
            return rows
        stored_delta, stored_n = prog.get("delta"), prog.get("n_bound")
        if redo["delta"] is None or redo["n_bound"] is None:
            claims = stored_n is not None
            row(
                "progress bound",
                stored_n,
                None,
                not claims,
                (f"stored N bound {stored_n} but " if claims else "no bound claimed, consistently: ") + redo["reason"],
            )
        elif stored_delta is None or not _close(stored_delta, redo["delta"]):
            row(
                "progress delta",
                stored_delta,
                redo["delta"],
                False,
                f"stored delta {stored_delta} != min per-epoch improvement {redo['delta']:.6g} of the stored objective",
            )
        elif stored_n is None or not _close(stored_n, redo["n_bound"]):
            row(
                "progress bound",
                stored_n,
                redo["n_bound"],
                False,
                f"stored N bound {stored_n} != (L0 - L*)/delta = {redo['n_bound']:.6g}",
            )
        else:
            row("progress bound", redo["epochs"], redo["n_bound"], redo["holds"], redo["reason"])
    return rows
