"""Reference `classical`: what an attacker fits without the released model (scikit-learn; a small CNN for images).

    text (`target.text`)       TF-IDF of word 1-2 grams and char_wb 3-5 grams (sublinear tf) + logistic regression
    images / feature vectors   logistic regression on the flattened, standardized pixels
    images (C, H, W)           also the repo's small CNN (`cnn`) trained from scratch for a fixed budget of
                               Adam at 1e-3, batch 64, no early stopping: the target's step budget (the attack
                               side's steps per run, as base.py asks of trained references), else `cnn_steps`

The regularization C of every logistic regression is chosen by stratified k-fold cross-validation on the
attacker's training split only (`select_logistic`: C in `cs`, folds = min(`folds`, smallest class count), the
folds shuffled with the target's seed; a split over `cv_max` examples is cross-validated on a stratified subsample
of that size); the refit on the whole training split is scored once on the test split.
The text pipeline is cross-validated as a whole (the vocabularies and IDF weights are refit inside every fold),
so the C chosen never saw its validation fold. The red team's `probe` train stage uses the same selection on the
released model's frozen features.

A token tensor task without its raw texts, a training split with one class, or labels logistic regression cannot
fit give a run with `error`, never an exception.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...config import check_int, option
from .base import ReferenceRun, ReferenceTarget, register_reference

# logistic regression's C grid, strong to weak regularization: standardized activations of a few hundred
# dimensions from a few hundred examples want C <= 0.1, TF-IDF wants C >= 10 (a larger C fits slower, no better)
CS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
FOLDS = 5
CV_MAX = 5000  # C is chosen on a stratified subsample of at most this many examples (MNIST: 30 fits of 4k, not 48k)
MAX_ITER = 2000  # lbfgs iterations: enough for C=100 on standardized or TF-IDF features
PATIENCE = 2  # the C path stops after this many Cs in a row without a better mean validation accuracy
CNN_STEPS = 2000  # the small CNN's budget without a target budget (Adam 1e-3, batch 64): digits ~90 epochs, MNIST ~2
PAIR_SEPARATOR = " [SEP] "  # joins a sentence-pair task's two texts into one document


@dataclass
class LogisticChoice:
    """A logistic-regression pipeline refit on the whole training split with the C cross-validation chose."""

    estimator: Any  # the fitted scikit-learn pipeline
    C: float
    cv_accuracy: float | None  # mean validation accuracy of that C (None: no fold possible, C fixed at 1)
    folds: int  # 0 when no cross-validation was possible
    convergence_warnings: int  # lbfgs runs that hit max_iter (0 for a clean fit)
    cv_samples: int  # training examples the cross-validation used (a subsample above `cv_max`)
    cs_tried: int = 0  # Cs of the grid cross-validated before the path stopped (`patience`)


def logistic(max_iter: int = MAX_ITER):
    """The classifier every reference uses (lbfgs, multinomial for more than two classes)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=max_iter)


def standardized_logistic(max_iter: int = MAX_ITER):
    """StandardScaler + logistic regression (step "lr") in the training rows' span (`RowSpan`): dense features
    (pixels, a model's activations)."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from .span import RowSpan

    return Pipeline([("scale", StandardScaler()), ("span", RowSpan()), ("lr", logistic(max_iter))])


def tfidf_logistic(max_iter: int = MAX_ITER):
    """Word 1-2 gram + char_wb 3-5 gram TF-IDF (sublinear tf) + logistic regression (step "lr")."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion, Pipeline

    features = FeatureUnion(
        [
            ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True)),
        ]
    )
    return Pipeline([("features", features), ("lr", logistic(max_iter))])


def select_logistic(
    pipeline,
    x_train,
    y_train,
    cs: tuple[float, ...] = CS,
    folds: int = FOLDS,
    seed: int = 0,
    cv_max: int | None = CV_MAX,
    patience: int | None = PATIENCE,
) -> LogisticChoice:
    """Choose the C of `pipeline`'s last step ("lr") by stratified k-fold accuracy on (x_train, y_train), then
    refit the whole pipeline with it (a grid search, as GridSearchCV's, whose feature steps are fit once per fold
    and shared by every C: TF-IDF on long documents costs more than the regressions).

    k = min(`folds`, smallest class count), folds shuffled with `seed`; ties go to the first C of `cs`. With a
    class of a single example no fold is possible and C is 1. A training split over `cv_max` examples is
    cross-validated on a stratified subsample of `cv_max` (seeded); the refit uses every example. ValueError for
    fewer than two classes.

    The Cs are tried from strong to weak regularization, every fold's fit warm-started at the last C's optimum;
    the path stops after `patience` Cs in a row whose mean validation accuracy is not above the best so far
    (None: the whole grid). Every C costs a fit per fold, and past a validation peak a weaker C is rarely
    better: the early stop changes the choice only when the mean accuracy over C has a second, higher peak."""
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold, train_test_split

    y_train = np.asarray(y_train)
    classes, counts = np.unique(y_train, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"the training split has {len(classes)} class(es) ({classes.tolist()}): nothing to fit")
    x_cv, y_cv = x_train, y_train
    if cv_max is not None and len(y_train) > cv_max:
        keep = train_test_split(np.arange(len(y_train)), train_size=cv_max, stratify=y_train, random_state=seed)[0]
        x_cv, y_cv = _rows(x_train, np.sort(keep)), y_train[np.sort(keep)]
        counts = np.unique(y_cv, return_counts=True)[1]
    k = min(int(folds), int(counts.min()))
    features, lr = pipeline[:-1], pipeline[-1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        cv_accuracy = None
        if k >= 2:
            split = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y_cv)), y_cv)
            folds_data = []  # (features fit, labels fit, features val, labels val, the fold's warm-started model)
            for fit_idx, val_idx in split:
                prep = clone(features)
                z_fit = prep.fit_transform(_rows(x_cv, fit_idx), y_cv[fit_idx])
                lr_fold = clone(lr).set_params(warm_start=True)  # along the path: each C starts at the last's optimum
                folds_data.append((z_fit, y_cv[fit_idx], prep.transform(_rows(x_cv, val_idx)), y_cv[val_idx], lr_fold))
            means = np.full(len(cs), -np.inf)  # mean validation accuracy per C (-inf: not tried)
            top, since = -np.inf, 0
            for j in np.argsort(cs, kind="stable"):  # strong to weak regularization
                means[j] = np.mean(
                    [m.set_params(C=cs[j]).fit(zf, yf).score(zv, yv) for zf, yf, zv, yv, m in folds_data]
                )
                top, since = (means[j], 0) if means[j] > top else (top, since + 1)
                if patience is not None and since >= patience:
                    break
            best = int(np.argmax(means))  # the first of equal means
            c, cv_accuracy, tried = float(cs[best]), float(means[best]), int(np.isfinite(means).sum())
        else:
            c, tried = 1.0, 0
        est = clone(pipeline).set_params(**{f"{pipeline.steps[-1][0]}__C": c}).fit(x_train, y_train)
    warned = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return LogisticChoice(est, c, cv_accuracy, k if k >= 2 else 0, warned, len(y_cv), tried)


def _rows(x, idx: np.ndarray):
    """Rows `idx` of an array or of a list of texts."""
    return x[idx] if hasattr(x, "shape") else [x[i] for i in idx]


def _labels(y) -> np.ndarray:
    y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer class ids, got dtype {y.dtype}")
    return y


def _texts(texts: list[str], pairs: list[str] | None) -> list[str]:
    return list(texts) if pairs is None else [a + PAIR_SEPARATOR + b for a, b in zip(texts, pairs, strict=True)]


@register_reference("classical")
@dataclass
class Classical:
    """TF-IDF + logistic regression on text; logistic regression on standardized pixels for images and vectors."""

    cs: tuple[float, ...] = option(CS, "logistic regression C values tried by cross-validation")
    folds: int = option(FOLDS, "most cross-validation folds (fewer when a class has fewer training examples)")
    cv_max: int = option(CV_MAX, "most training examples the choice of C is cross-validated on (the refit uses all)")
    max_iter: int = option(MAX_ITER, "lbfgs iterations per fit")
    patience: int | None = option(
        PATIENCE, "stop the C path after this many Cs in a row without a better CV accuracy (None: every C)"
    )
    cnn: bool = option(True, "also train the small CNN from scratch on images")
    cnn_steps: int | None = option(
        None, f"the CNN's optimizer steps (default: the target's step budget, else {CNN_STEPS})"
    )

    def __post_init__(self):
        self.cs = tuple(float(c) for c in self.cs)
        if not self.cs or any(c <= 0 for c in self.cs):
            raise ValueError(f"classical: cs must be positive numbers, got {self.cs!r}")
        check_int("classical", "folds", self.folds, 2)
        check_int("classical", "max_iter", self.max_iter, 1)
        check_int("classical", "cv_max", self.cv_max, 2)
        check_int("classical", "patience", self.patience, 1, allow_none=True)
        check_int("classical", "cnn_steps", self.cnn_steps, 1, allow_none=True)

    def __call__(self, target: ReferenceTarget) -> list[ReferenceRun]:
        if target.text is not None:
            t = target.text
            data = (_texts(t.texts_train, t.pairs_train), t.labels_train, _texts(t.texts_test, t.pairs_test))
            return [self._run("classical:tfidf+lr", tfidf_logistic, target.seed, *data, t.labels_test)]
        task = target.task
        if not task.x_train.is_floating_point():
            return [
                ReferenceRun(
                    attacker="classical:tfidf+lr",
                    n_train=len(task.y_train),
                    error=f"needs the raw texts: task {task.name!r} holds token ids and the target has no text "
                    f"(give ReferenceTarget(text=TextTask))",
                )
            ]
        flat = [x.reshape(len(x), -1).double().numpy() for x in (task.x_train, task.x_test)]
        runs = [
            self._run(
                "classical:pixels+lr", standardized_logistic, target.seed, flat[0], task.y_train, flat[1], task.y_test
            )
        ]
        if self.cnn and len(task.input_shape) == 3 and min(task.input_shape[1:]) >= 4:
            steps = self.cnn_steps or target.steps or CNN_STEPS
            runs.append(self._cnn(task, steps, target.seed))
        return runs

    def _cnn(self, task, steps: int, seed: int) -> ReferenceRun:
        """The repo's small CNN (two conv blocks) trained from scratch for `steps`, scored once on the test split."""
        import torch

        from ...models import build
        from ...train import LoopConfig, accuracy, fit

        t0 = time.perf_counter()
        run = ReferenceRun(attacker="classical:cnn", n_train=len(task.y_train))
        try:
            y_train = _labels(task.y_train)
            if len(np.unique(y_train)) < 2:
                raise ValueError(f"the training split has 1 class(es) ({np.unique(y_train).tolist()}): nothing to fit")
            per_epoch = -(-len(y_train) // 64)
            epochs = -(-steps // per_epoch)
            loop = LoopConfig(optimizer="adam", lr=1e-3, epochs=epochs, max_steps=steps, batch_size=64, seed=seed)
            with torch.random.fork_rng(devices=[]):  # the init is seeded; the caller's random stream is kept
                torch.manual_seed(seed)
                model = build("cnn", input_shape=task.input_shape, num_classes=task.num_classes)
            res = fit(model, task, loop, progress=False)
            run.accuracy = accuracy(model, task.x_test, task.y_test)
            run.details = {
                "epochs": epochs,
                "steps": res.steps,
                "optimizer": "adam@0.001",
                "batch_size": loop.batch_size,
                "n_test": len(task.y_test),
            }
            if res.stopped:
                run.details["stopped"] = res.stopped
        except Exception as e:  # as for the regressions: a row with its error
            run.error = f"{type(e).__name__}: {e}"
        run.wall_s = time.perf_counter() - t0
        return run

    def _run(self, name: str, make, seed: int, x_train, y_train, x_test, y_test) -> ReferenceRun:
        t0 = time.perf_counter()
        run = ReferenceRun(attacker=name, n_train=len(y_train))
        try:
            y_train, y_test = _labels(y_train), _labels(y_test)
            choice = select_logistic(
                make(self.max_iter), x_train, y_train, self.cs, self.folds, seed, self.cv_max, self.patience
            )
            run.accuracy = float(choice.estimator.score(x_test, y_test))
            run.details = {
                "C": choice.C,
                "cv_accuracy": choice.cv_accuracy,
                "folds": choice.folds,
                "cv_samples": choice.cv_samples,
                "cs": list(self.cs),
                "cs_tried": choice.cs_tried,
                "n_test": len(y_test),
                "features": _n_features(choice.estimator),
            }
            if choice.convergence_warnings:
                run.details["convergence_warnings"] = choice.convergence_warnings
        except Exception as e:  # a task this model cannot fit is a row with its error (base.py's contract)
            run.error = f"{type(e).__name__}: {e}"
        run.wall_s = time.perf_counter() - t0
        return run


def _n_features(estimator) -> int | None:
    lr = estimator.named_steps["lr"]
    n = getattr(lr, "n_features_in_", None)
    return None if n is None else int(n)


__all__ = [
    "CS",
    "Classical",
    "LogisticChoice",
    "select_logistic",
    "standardized_logistic",
    "tfidf_logistic",
]
