"""Train `probe`: logistic regression on the current weights' frozen features (no weight is changed).

The cheapest strong attack on released weights, and none that a fine-tuning lock is built against: read the
model's features on the attacker's training split and fit a linear classifier on them. Feature sets, each
computed in eval mode under no_grad, in batches, by forward hooks:

    <head>:input   the input of the classification head (`find_head`)
    <trunk>.<i>    the output of each direct child of the main trunk: the ModuleList or Sequential with the
                   most direct children (a transformer's layers, an MLP's body, a CNN's feature stack); a child
                   whose output is not a tensor with a batch dimension (or a tuple starting with one, as a
                   transformer layer's) is left out, and so is the head; at most `max_blocks` (8) children,
                   evenly spaced, the deepest always (EfficientNet-Lite0's 16 blocks cost 16 fits otherwise)

Pooling to one vector per example: a (N, D) output as it is; token inputs (N, 3, L): a (N, L, D) output is
averaged over the attention mask's tokens; any other (N, C, ...) output is averaged over every axis after C
(global average pooling of channels-first maps). Each set gets a standardized logistic regression whose C is
chosen by stratified cross-validation on the training split (`references.classical.select_logistic`, the
classical reference's recipe); the set with the best cross-validation accuracy is refit on the whole training
split and scored once on the test split. Ties go to the head's input, then to the deepest block (the usual
probe reads the last layer; shallower blocks win only by a better score).

The model after the stage is the model before it: the probe is a separate classifier, not a weight update.
The row's accuracy is the probe's test accuracy (set after the red team scores the unchanged model, so the
authorized-task accuracy and the certificates are those of the weights the attacker kept), its steps and
cost_steps are 0, and `extra["probe"]` records the winning feature set, its cross-validation accuracy and C,
every set's cross-validation accuracy, and the probe's wall time. A data stage that measures the final model
(the backdoor's attack success rate) would measure the released head, not the probe: such a run is skipped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn as nn

from ...config import check_int, option
from ...models.blocks import (  # noqa: F401  (spread, trunk: moved down to models.blocks, still importable here)
    LAYERS,
    MAX_BLOCKS,
    feature_modules,
    is_tokens,
    pool,
    spread,
    trunk,
)
from ...train.metrics import eval_batch_size
from .base import AttackState, StageNotApplicable, register_stage


@torch.no_grad()
def probe_features(
    model: nn.Module,
    x: torch.Tensor,
    layers: str = "all",
    batch_size: int | None = None,
    max_blocks: int | None = MAX_BLOCKS,
) -> dict[str, np.ndarray]:
    """{feature set: (N, D) float64} of `model` on `x`: the head's input first, then the trunk's children in
    order (layers="all"; at most `max_blocks` of them, evenly spaced, the deepest always); computed in eval mode
    in batches (default `eval_batch_size`: 32 images on a CPU, 1024 on a GPU, 64 token sequences), the model's
    training mode restored. A set some batch gave no tensor for is left out."""
    sets = feature_modules(model, layers, max_blocks)  # shared with the locks that train against a probe
    tokens = is_tokens(x)  # (N, 3, L): ids, mask, types
    device = next(model.parameters()).device
    if batch_size is None:
        batch_size = eval_batch_size(x, device)
    got: dict[str, list[torch.Tensor | None]] = {name: [] for name, _ in sets}
    batch: dict = {}

    def hook(name: str, pre: bool):
        def fn(_module, args, out=None):
            got[name].append(pool(args[0] if pre and args else out, batch["mask"], batch["n"]))

        return fn

    handles = [
        mod.register_forward_pre_hook(hook(name, True)) if i == 0 else mod.register_forward_hook(hook(name, False))
        for i, (name, mod) in enumerate(sets)
    ]
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device)
            batch.update(n=len(xb), mask=xb[:, 1] if tokens else None)
            seen = {name: len(v) for name, v in got.items()}
            model(xb)
            for name, v in got.items():  # a module called more than once per forward: its last call counts
                del v[seen[name] : -1]
                if len(v) == seen[name]:
                    v.append(None)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {
        name: torch.cat(parts).cpu().double().numpy()
        for name, parts in got.items()
        if parts and all(p is not None for p in parts)
    }


def _cv(choice) -> float:
    return -1.0 if choice.cv_accuracy is None else choice.cv_accuracy


def fit_probe(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: np.ndarray,
    x_test: torch.Tensor,
    y_test: np.ndarray,
    settings: Probe | None = None,
    seed: int = 0,
) -> dict | None:
    """The probe of the module docstring on `model`'s frozen features: every feature set's standardized logistic
    regression (C by cross-validation, `select_logistic`), the set with the best cross-validation accuracy refit
    and scored once on the test split. `settings`: the stage's options (layers, folds, batch size, most blocks;
    default: its defaults). {"layer", "cv_accuracy", "C", "folds", "features", "test_accuracy", "cv_by_layer"};
    None when no feature set was computed. The stage and the `alternative` reference use it."""
    from ..references.classical import select_logistic, standardized_logistic

    p = settings or Probe()
    feats_train = probe_features(model, x_train, p.layers, p.batch_size, p.max_blocks)
    feats_test = probe_features(model, x_test, p.layers, p.batch_size, p.max_blocks)
    choices = {
        name: select_logistic(standardized_logistic(), f, y_train, folds=p.folds, seed=seed)
        for name, f in feats_train.items()
        if name in feats_test
    }
    if not choices:
        return None
    head = [n for n in choices if n.endswith(":input")]
    prefer = head + [n for n in reversed(choices) if n not in head]  # ties: the head's input, the deepest block
    layer = max(prefer, key=lambda n: _cv(choices[n]))  # the first of equal scores
    won = choices[layer]
    return {
        "layer": layer,
        "cv_accuracy": won.cv_accuracy,
        "C": won.C,
        "folds": won.folds,
        "features": int(feats_train[layer].shape[1]),
        "test_accuracy": float(won.estimator.score(feats_test[layer], y_test)),
        "cv_by_layer": {n: c.cv_accuracy for n, c in choices.items()},
    }


@register_stage("train", "probe", example={"train": "probe"})
@dataclass
class Probe:
    """Logistic regression on the frozen features of the current weights (the head's input and each trunk
    block's pooled output), the feature set chosen by cross-validation; no weight changes, 0 optimizer steps."""

    layers: str = option(
        "all", "head: the head's input only; all: also every block of the main trunk", choices=lambda: LAYERS
    )
    folds: int = option(5, "most cross-validation folds for C (fewer when a class has fewer training examples)")
    batch_size: int | None = option(
        None, "examples per forward pass (default: 32 images on a CPU, 1024 on a GPU, 64 token sequences)"
    )
    max_blocks: int = option(
        MAX_BLOCKS, "at most this many trunk blocks probed, evenly spaced, the deepest always (each costs a CV fit)"
    )
    requires: ClassVar[tuple[str, ...]] = ("sklearn",)  # optional packages the stage imports
    trains_weights: ClassVar[bool] = False  # fits a classifier beside the model: the row's steps are 0

    def __post_init__(self):
        if self.layers not in LAYERS:
            raise ValueError(f"probe: layers must be one of {LAYERS}, got {self.layers!r}")
        check_int("probe", "folds", self.folds, 2)
        check_int("probe", "batch_size", self.batch_size, 1, allow_none=True)
        check_int("probe", "max_blocks", self.max_blocks, 1)

    def __call__(self, state: AttackState) -> None:
        t0 = time.perf_counter()
        if state.after:  # e.g. the backdoor's attack success rate: it would measure the released head, not the probe
            raise StageNotApplicable(
                "probe: the data stage measures the final model, and a probe leaves the model unchanged (its "
                "classifier is beside it); use data=clean"
            )
        train, test = state.adapted(state.train_task), state.adapted(state.task)
        y_train, y_test = train.y_train.numpy(), test.y_test.numpy()
        if len(np.unique(y_train)) < 2:
            raise StageNotApplicable(f"probe: the training split has one class ({np.unique(y_train).tolist()})")
        probe = fit_probe(state.model, train.x_train, y_train, test.x_test, y_test, self, state.seed)
        if probe is None:
            raise StageNotApplicable("probe: no feature set (the head's input was never computed)")
        acc = probe["test_accuracy"]
        row = state.row
        row.accuracy_before_fold, row.curve, row.evals = acc, [acc], [[0, acc]]
        row.steps, row.steps_to_target = 0, 0 if acc >= state.spec.finetune.target_accuracy else None
        state.spend(0)
        row.extra["probe"] = {**probe, "wall_s": time.perf_counter() - t0}
        row.accuracy, state.scored = acc, True  # the classifier beside the model is the attack's; its weights stay
