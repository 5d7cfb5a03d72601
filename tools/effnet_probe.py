"""Issue 23's linear-probe claim: ImageNet effnet-lite0 features vs raw pixels on cifar10-bb, few labels.

A logistic regression (scikit-learn; features standardized; C chosen by stratified k-fold cross-validation on
the training images only) on (a) the pooled pretrained effnet-lite0 features at `--size` px
(`trainlock.models.pooled_features`) and (b) the raw pixels (3 x 32 x 32), each fitted on `--train-size` images
drawn from the task's training split (`Task.subset`, seeded) and scored on the whole test split.

    python tools/effnet_probe.py --train-size 500 [--size 96] [--seed 0] [--folds 5] [--json out.json]

Needs the cifar10-bb task (`trainlock fetch bigbench --tasks cifar10_classification`) and the ImageNet weights
(`make models`). Prints the accuracies, the chosen C and the wall time of each phase.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

CS = np.logspace(-4, 2, 7)  # the C grid for cross-validation


def probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, folds: int, seed: int):
    """(test accuracy, chosen C, seconds) of a standardized logistic regression with C from k-fold CV."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    t = time.perf_counter()
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    search = GridSearchCV(pipe, {"logisticregression__C": CS}, cv=cv, n_jobs=1).fit(x_train, y_train)
    acc = float(search.score(x_test, y_test))
    return acc, float(search.best_params_["logisticregression__C"]), time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-size", type=int, default=500, help="training images drawn from the train split")
    ap.add_argument("--size", type=int, default=96, help="effnet-lite0 input size in px")
    ap.add_argument("--seed", type=int, default=0, help="seeds the training subset and the CV folds")
    ap.add_argument("--folds", type=int, default=5, help="cross-validation folds for C")
    ap.add_argument("--batch-size", type=int, default=64, help="feature extraction batch")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    import trainlock as tl
    from trainlock.models import build, pooled_features

    start = time.perf_counter()
    task = tl.tasks.get("cifar10-bb")
    sub = task.subset(args.train_size, None, seed=args.seed)
    y_train, y_test = sub.y_train.numpy(), sub.y_test.numpy()
    counts = np.bincount(y_train, minlength=task.num_classes)
    print(
        f"cifar10-bb: {len(y_train)} training images (per class {counts.min()}-{counts.max()}), "
        f"{len(y_test)} test images; threads {torch.get_num_threads()}",
        flush=True,
    )

    t = time.perf_counter()
    model = build("effnet-lite0", input_shape=task.input_shape, num_classes=task.num_classes, size=args.size)
    f_train = pooled_features(model, sub.x_train, args.batch_size).numpy()
    f_test = pooled_features(model, sub.x_test, args.batch_size).numpy()
    feat_s = time.perf_counter() - t
    print(f"features {f_train.shape[1]}-d at {args.size} px: {feat_s:.1f} s", flush=True)

    results = {"train_size": len(y_train), "test_size": len(y_test), "size": args.size, "seed": args.seed}
    results["features_s"] = round(feat_s, 1)
    for name, (a, b) in {
        "effnet": (f_train, f_test),
        "pixels": (sub.x_train.flatten(1).numpy(), sub.x_test.flatten(1).numpy()),
    }.items():
        acc, c, secs = probe(a, y_train, b, y_test, args.folds, args.seed)
        results[name] = {"accuracy": round(acc, 4), "C": c, "fit_s": round(secs, 1)}
        print(f"{name:>7}: test accuracy {acc:.4f} (C={c:g} by {args.folds}-fold CV), fit {secs:.1f} s", flush=True)
    results["wall_s"] = round(time.perf_counter() - start, 1)
    print(
        f"logistic regression on {len(y_train)} images: effnet-lite0 features {results['effnet']['accuracy']:.3f} "
        f"vs raw pixels {results['pixels']['accuracy']:.3f}; wall {results['wall_s']:.1f} s"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    main()
