"""Reference attackers and the probe attack: the classical reference (TF-IDF + logistic regression on text,
logistic regression on pixels) against scikit-learn computed here, its error rows, and the red team's `probe`
train stage (logistic regression on the released model's frozen features) through `run_spec`."""

import json
import random

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from trainlock.attacks.references import REFERENCES, ReferenceTarget, best_reference, run_reference
from trainlock.attacks.references.classical import CS, MAX_ITER
from trainlock.attacks.stages import registered
from trainlock.attacks.stages.probe import probe_features, trunk
from trainlock.red_team import AttackSpec, RunRow, Target, run_spec
from trainlock.tasks import Task, TextTask

FILLER = [f"w{i}" for i in range(60)]
KEYWORDS = {0: ["apple", "pear", "plum"], 1: ["car", "bus", "train"], 2: ["red", "blue", "green"]}


def _docs(n: int, seed: int) -> tuple[list[str], list[int]]:
    """Documents of filler words and one keyword; the keyword's class is the label (word identity decides)."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 3
        words = [*rng.sample(FILLER, 8), rng.choice(KEYWORDS[label])]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def _text_task(n_train: int = 90, n_test: int = 150, shuffle: bool = False) -> TextTask:
    texts, labels = _docs(n_train + n_test, seed=0)
    if shuffle:  # the control: labels independent of the texts
        random.Random(1).shuffle(labels)
    return TextTask("words", texts[:n_train], labels[:n_train], texts[n_train:], labels[n_train:], ["a", "b", "c"])


def _tokens(text: TextTask) -> Task:
    """A token tensor task as a text model reads it (N, 3, L) int64: what the red team's task is for text."""
    n, m = len(text.labels_train), len(text.labels_test)
    return Task(
        text.name,
        torch.zeros(n, 3, 4, dtype=torch.long),
        torch.tensor(text.labels_train),
        torch.zeros(m, 3, 4, dtype=torch.long),
        torch.tensor(text.labels_test),
        text.num_classes,
        meta={"text": True},
    )


def _classical(task: Task, text: TextTask | None = None, **options) -> list:
    return run_reference("classical", ReferenceTarget(task=task, text=text, seed=0), **options)


def _sklearn_lr(x_train, y_train, x_test, y_test) -> tuple[float, float]:
    """(test accuracy, C) of scikit-learn's own grid search: standardized LR, C by 5-fold CV (seed 0)."""
    pipe = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression(max_iter=MAX_ITER))])
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    search = GridSearchCV(pipe, {"lr__C": list(CS)}, scoring="accuracy", cv=cv).fit(x_train, y_train)
    return float(search.score(x_test, y_test)), float(search.best_params_["lr__C"])


# ---------------------------------------------------------------- the classical reference


def test_classical_is_registered_and_probe_is_a_train_stage():
    assert "classical" in REFERENCES.names()
    assert ("train", "probe") in registered()


def test_classical_text_learns_word_identity_and_not_shuffled_labels():
    text = _text_task()
    (run,) = _classical(_tokens(text), text)
    assert run.error is None and run.attacker == "classical:tfidf+lr" and run.n_train == 90
    assert run.accuracy >= 0.95
    assert run.details["C"] in CS and run.details["folds"] == 5 and run.wall_s > 0
    assert json.loads(json.dumps(run.to_dict())) == run.to_dict()
    control = _text_task(shuffle=True)
    (run,) = _classical(_tokens(control), control)
    assert run.error is None and abs(run.accuracy - 1 / 3) < 0.15  # chance, 150 test documents


def test_classical_text_reads_the_pair():
    """A sentence-pair task: the keyword is in the second text only, so only a model that joins them learns."""
    text = _text_task()
    filler = [" ".join(FILLER[i % 50 : i % 50 + 5]) for i in range(len(text.texts_train) + len(text.texts_test))]
    pair = TextTask(
        "pairs",
        filler[:90],
        text.labels_train,
        filler[90:],
        text.labels_test,
        text.label_names,
        pairs_train=text.texts_train,
        pairs_test=text.texts_test,
    )
    (run,) = _classical(_tokens(pair), pair)
    assert run.error is None and run.accuracy >= 0.95


def test_classical_pixels_on_digits_match_sklearn(digits):
    (run,) = _classical(digits, cnn=False)
    assert run.error is None and run.attacker == "classical:pixels+lr" and run.n_train == len(digits.y_train)
    flat = [x.flatten(1).double().numpy() for x in (digits.x_train, digits.x_test)]
    ref, c = _sklearn_lr(flat[0], digits.y_train.numpy(), flat[1], digits.y_test.numpy())
    assert run.accuracy == pytest.approx(ref, abs=1e-12) and run.details["C"] == c
    assert run.accuracy > 0.9 and run.details["features"] == 64


def test_classical_cross_validates_a_large_split_on_a_subsample(digits):
    (run,) = _classical(digits, cnn=False, cv_max=400)
    assert run.error is None and run.details["cv_samples"] == 400 and run.n_train == len(digits.y_train)
    assert run.accuracy > 0.9  # the refit uses every training example


def test_c_path_stops_after_patience_cs_without_a_better_cv_accuracy():
    """Separable data: every C scores 1.0, so the first C stays the best and the path stops `patience` Cs later."""
    from trainlock.attacks.references.classical import select_logistic, standardized_logistic

    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    x = y[:, None] * 10.0 + rng.normal(size=(60, 4))
    tried = {p: select_logistic(standardized_logistic(), x, y, patience=p) for p in (1, 2, None)}
    assert {p: c.cs_tried for p, c in tried.items()} == {1: 2, 2: 3, None: len(CS)}
    assert all(min(CS) == c.C and c.cv_accuracy == 1.0 for c in tried.values())  # ties: the first C of the grid


def test_classical_c_path_stop_keeps_the_full_grids_choice(digits):
    small, cs = digits.subset(n_train=300, seed=0), (0.1, 1.0, 10.0, 100.0, 1000.0)  # its CV peaks at C = 1
    (early,) = _classical(small, cnn=False, cs=cs)
    (full,) = _classical(small, cnn=False, cs=cs, patience=None)
    assert full.details["cs_tried"] == len(cs) and early.details["cs_tried"] == 4
    assert early.details["C"] == full.details["C"] and early.accuracy == full.accuracy


def test_row_span_fits_the_same_logistic_regression_with_fewer_coefficients():
    """Wide data (d > n): the fit in the training rows' span is the full fit, to lbfgs's tolerance."""
    from trainlock.attacks.references.classical import standardized_logistic

    rng = np.random.default_rng(0)
    y = np.arange(80) % 4
    x = rng.normal(size=(80, 500)) + 0.3 * np.eye(4)[y] @ rng.normal(size=(4, 500))
    x_test = rng.normal(size=(200, 500))
    span = standardized_logistic().set_params(lr__C=0.1).fit(x, y)
    full = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression(C=0.1, max_iter=MAX_ITER))]).fit(x, y)
    basis = span.named_steps["span"].basis_
    # the standardized rows are centered: their span has n - 1 dimensions (the intercept carries the last)
    assert basis.shape == (500, 79) and np.allclose(basis.T @ basis, np.eye(79), atol=1e-10)
    assert span.named_steps["lr"].coef_.shape == (4, 79)
    np.testing.assert_allclose(span.predict_proba(x_test), full.predict_proba(x_test), atol=2e-3)
    tall = standardized_logistic().fit(x[:, :50], y)  # d <= n: nothing to gain, the identity
    assert tall.named_steps["span"].basis_ is None and tall.named_steps["lr"].coef_.shape == (4, 50)


def test_classical_cnn_on_digits_is_seeded_and_budgeted(digits):
    small = digits.subset(n_train=500, seed=0)
    target = ReferenceTarget(task=small, steps=100, seed=0)  # the attack side's steps per run: the CNN's budget
    runs = {r.attacker: r for r in run_reference("classical", target)}
    assert set(runs) == {"classical:pixels+lr", "classical:cnn"}
    cnn = runs["classical:cnn"]
    assert cnn.error is None and cnn.details["steps"] == 100  # whatever the epoch length
    assert cnn.accuracy > 0.5  # 100 steps: well above chance (2000 steps on all of digits: 0.98)
    again = {r.attacker: r for r in run_reference("classical", target)}["classical:cnn"]
    assert again.accuracy == cnn.accuracy  # the init and the data order are seeded
    (run,) = [r for r in run_reference("classical", target, cnn_steps=20) if r.attacker == "classical:cnn"]
    assert run.details["steps"] == 20  # an explicit budget wins over the target's


def test_classical_says_why_it_cannot_fit():
    text = _text_task()
    (run,) = _classical(_tokens(text))  # tokens without their texts
    assert run.accuracy is None and "needs the raw texts" in run.error
    one = TextTask("one", text.texts_train, [0] * 90, text.texts_test, text.labels_test, text.label_names)
    (run,) = _classical(_tokens(one), one)
    assert run.accuracy is None and "1 class" in run.error and run.n_train == 90
    x = torch.rand(20, 4)
    floats = Task("floats", x, torch.linspace(0, 1, 20), x, torch.linspace(0, 1, 20), 2)  # regression targets
    (run,) = _classical(floats)
    assert run.accuracy is None and "integer class ids" in run.error
    assert best_reference([run]) is None  # an error row is never the best


# ---------------------------------------------------------------- the probe attack (a red-team train stage)


def _state(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model, before: dict) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_probe_equals_sklearn_on_the_head_input(tiny_base, digits, digits_permuted):
    before = _state(tiny_base)
    spec = AttackSpec.from_dict({"train": "probe", "options": {"probe": {"layers": "head"}}})
    row = run_spec(Target(tiny_base, digits_permuted, digits), spec)
    assert row.error is None and row.skipped is None and _unchanged(tiny_base, before)
    with torch.no_grad():  # the MLP's head input, computed directly
        feats = [
            tiny_base.body(x.flatten(1)).double().numpy() for x in (digits_permuted.x_train, digits_permuted.x_test)
        ]
    ref, c = _sklearn_lr(feats[0], digits_permuted.y_train.numpy(), feats[1], digits_permuted.y_test.numpy())
    probe = row.extra["probe"]
    assert row.accuracy == pytest.approx(ref, abs=1e-12) and probe["C"] == c and probe["layer"] == "head:input"
    assert probe["features"] == 32 and list(probe["cv_by_layer"]) == ["head:input"]
    assert row.steps == 0 and row.cost_steps == 0 and row.accuracy_before_fold == row.accuracy
    # the model after the stage is the released one: its authorized accuracy is the released model's
    assert row.authorized_after_attack == row.authorized_after_transform
    assert RunRow.from_dict(json.loads(json.dumps(row.to_dict()))) == row


def test_probe_picks_the_best_layer_by_cv(tiny_base, digits, digits_permuted):
    before = _state(tiny_base)
    row = run_spec(Target(tiny_base, digits_permuted, digits), AttackSpec.from_dict({"train": "probe"}))
    assert row.error is None and _unchanged(tiny_base, before)
    probe = row.extra["probe"]
    assert list(probe["cv_by_layer"]) == ["head:input", "body.0", "body.1"]
    cv = probe["cv_by_layer"]
    assert probe["cv_accuracy"] == max(cv.values())
    assert cv["head:input"] == cv["body.1"]  # the ReLU's output is the head's input: equal scores, the head wins
    prefer = ["head:input", "body.1", "body.0"]  # ties: the head's input, then the deepest block
    assert probe["layer"] == next(n for n in prefer if cv[n] == max(cv.values()))
    assert probe["layer"] in probe["cv_by_layer"] and row.accuracy == probe["test_accuracy"] > 0.8
    assert row.attack.endswith("[probe]") and probe["wall_s"] > 0


def test_probe_on_a_text_transformer():
    pytest.importorskip("transformers")
    from hf_tiny import tiny, toy_task

    model, task = tiny("bert", init=0.3), toy_task(120)
    before = _state(model)
    row = run_spec(Target(model, task, task), AttackSpec.from_dict({"train": "probe"}))
    assert row.error is None and row.skipped is None and _unchanged(model, before)
    probe = row.extra["probe"]
    assert set(probe["cv_by_layer"]) == {
        "model.classifier:input",
        "model.bert.encoder.layer.0",
        "model.bert.encoder.layer.1",
    }
    assert row.accuracy >= 0.9 and row.steps == 0


def test_probe_features_pool_over_real_tokens_only():
    """Padding does not move a mean-pooled layer's features: the same text padded to two lengths."""
    pytest.importorskip("transformers")
    from hf_tiny import tiny

    model = tiny("llama", init=0.3)  # causal: a real token's hidden state does not depend on later padding

    def encoded(length: int) -> torch.Tensor:  # (1, 3, length): ids, mask, token types
        t = model.tokenizer(["good movie"], padding="max_length", max_length=length, return_tensors="pt")
        return torch.stack([t["input_ids"], t["attention_mask"], torch.zeros_like(t["input_ids"])], 1)

    x = [encoded(4), encoded(8)]
    a, b = (probe_features(model, xi) for xi in x)
    layer = "model.model.layers.1"
    assert np.allclose(a[layer], b[layer], atol=1e-5)


def test_probe_trunk_of_a_cnn():
    import trainlock as tl

    cnn = tl.models.build("cnn", input_shape=(1, 8, 8), num_classes=10)
    assert [n for n, _ in trunk(cnn, cnn.head)] == [f"features.{i}" for i in range(6)]
    feats = probe_features(cnn, torch.rand(5, 1, 8, 8))
    assert feats["head:input"].shape == (5, 128) and feats["features.3"].shape == (5, 32)  # pooled over space


def test_probe_skips_a_one_class_training_split(tiny_base, digits):
    one = Task("one", digits.x_train[:50], torch.zeros(50, dtype=torch.long), digits.x_test, digits.y_test, 10)
    row = run_spec(Target(tiny_base, one, digits), AttackSpec.from_dict({"train": "probe"}))
    assert row.error is None and row.accuracy is None and "one class" in row.skipped


def test_probe_skips_a_data_stage_that_measures_the_final_model(tiny_base, digits, digits_permuted):
    """The backdoor's attack success rate is measured on the final model, which a probe leaves unchanged."""
    row = run_spec(
        Target(tiny_base, digits_permuted, digits), AttackSpec.from_dict({"train": "probe", "data": "backdoor"})
    )
    assert row.error is None and row.accuracy is None and "probe leaves the model unchanged" in row.skipped
