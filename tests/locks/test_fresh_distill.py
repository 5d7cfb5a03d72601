"""`fresh-distill`: a re-initialized network distilled on the authorized task; the sketch certificate tells the
base's own weights (cosine 1) from the released ones (near 0)."""

import pytest
import torch

import trainlock as tl
from trainlock.io.artifacts import load, save
from trainlock.locks import LOCKS
from trainlock.locks.fresh_distill import SKETCH, FreshDistillConfig, _sketch

LOOP = {"optimizer": "adam", "lr": 3e-3, "epochs": 15, "batch_size": 32, "device": "cpu"}


def test_sketch_estimates_the_cosine():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 50, generator=g)
    b = torch.randn(40, 50, generator=g)
    mix = 0.6 * a / a.norm() + 0.8 * b / b.norm()  # cos(a, mix) = 0.6 up to a's and b's own overlap
    exact = float((a.flatten() @ mix.flatten()) / (a.norm() * mix.norm()))
    est = float((_sketch(a, 1) * _sketch(mix, 1)).sum())
    assert est == pytest.approx(exact, abs=3 / SKETCH**0.5)
    assert float((_sketch(a, 1) * _sketch(a, 1)).sum()) == pytest.approx(1.0, abs=1e-6)
    assert float((_sketch(a, 1) * _sketch(-a, 1)).sum()) == pytest.approx(-1.0, abs=1e-6)


def test_fresh_distill_keeps_utility_on_digits_and_certifies(tiny_base, digits, tmp_path):
    lk = LOCKS.get("fresh-distill").from_config({"loop": LOOP})
    out = lk.apply(tiny_base, digits)
    locked = out.model
    acc0, acc1 = tl.train.evaluate(tiny_base, digits), tl.train.evaluate(locked, digits)
    assert acc1 >= acc0 - 0.05, (acc0, acc1)  # digits is easy: a fresh MLP distilled on it gets there
    assert out.report.accuracy_after == acc1
    # the drawn seed is recorded with what apply measured; the config keeps "draw one"
    assert isinstance(out.record.seed, int) and lk.cfg.seed is None and lk.config()["seed"] is None
    assert out.record.retain_task == "digits" and set(out.record.sketches) == {"body.0.weight", "head.weight"}
    (cert,) = lk.certify(locked, out.record)
    assert cert.holds and cert.measured < 0.3
    (on_base,) = lk.certify(tiny_base, out.record)  # the base itself is what the certificate must reject
    assert not on_base.holds and on_base.measured == pytest.approx(1.0, abs=1e-5)
    # the weights differ from the base's everywhere (nothing kept)
    for (n, p), (_, q) in zip(tiny_base.named_parameters(), locked.named_parameters(), strict=False):
        assert not torch.equal(p, q), n
    # saved and reloaded, the recorded lock re-certifies from the weights
    res = tl.lock(tiny_base, {"type": "fresh-distill", "loop": LOOP}, retain=digits)
    save(res.model, tmp_path / "m", {"task": "digits", **res.record})
    model, meta = load(tmp_path / "m")
    assert meta["locks"][0]["config"]["seed"] is None and isinstance(meta["locks"][0]["record"]["seed"], int)
    again = tl.locks.lock_from_meta(meta["locks"]).certify(model)
    assert all(c.holds for c in again)
    assert again[0].measured == pytest.approx(res.record["certificates"][0]["measured"])


def test_keep_copies_the_named_parameters_and_checks_its_patterns(tiny_base, digits):
    lk = LOCKS.get("fresh-distill").from_config({"loop": {**LOOP, "epochs": 1}, "keep": ["^body\\.0\\."]})
    locked = lk.apply(tiny_base, digits).model
    base = dict(tiny_base.named_parameters())
    for n, p in locked.named_parameters():
        assert torch.equal(p, base[n]) == n.startswith("body.0."), n
    with pytest.raises(ValueError, match="match no parameter"):
        LOCKS.get("fresh-distill").from_config({"loop": LOOP, "keep": ["nothing-here"]}).apply(tiny_base, digits)
    with pytest.raises(ValueError, match="regular expression"):
        FreshDistillConfig(keep=("(",))


def test_cli_locks_with_a_non_spectral_report(tiny_base, tmp_path, capsys):
    """Regression: `trainlock lock --spec` printed SpecDef's sigma line for every lock with a report and crashed
    (KeyError 'top_k') after training, for sophon, repnoise, immunize and fresh-distill."""
    from trainlock.cli.main import main

    save(tiny_base, tmp_path / "base", {"task": "digits"})
    spec = (
        '{"type": "fresh-distill", "seed": 1, "loop": {"optimizer": "adam", "lr": 0.003, "epochs": 2, "device": "cpu"}}'
    )
    assert main(["lock", str(tmp_path / "base"), "--out", str(tmp_path / "locked"), "--spec", spec]) == 0
    out = capsys.readouterr().out
    assert "fresh-distill: max over re-initialized weights" in out and "sigma" not in out.split("fresh-distill:")[0]


def test_data_distills_on_the_named_task_not_the_subset_handed_over(tiny_base, digits):
    small = digits.subset(n_train=64, seed=0)  # what a table run with --train-samples hands over
    loop = {**LOOP, "epochs": 1, "batch_size": 32}
    on_subset = LOCKS.get("fresh-distill").from_config({"loop": loop, "seed": 1})
    subset_run = on_subset.apply(tiny_base, small)
    on_all = LOCKS.get("fresh-distill").from_config({"loop": loop, "seed": 1, "data": "digits"})
    all_run = on_all.apply(tiny_base, small)
    assert subset_run.report.steps == 2  # 64 / 32
    assert all_run.report.steps == -(-len(digits.y_train) // 32)  # every training sample of digits
    assert on_all.config()["data"] == "digits"  # recorded with the lock
    assert subset_run.record.seed == all_run.record.seed == 1
    assert subset_run.record.retain_task == all_run.record.retain_task == small.name  # the task handed over
    with pytest.raises(ValueError, match="classes"):  # a data task must speak the retain task's classes
        other = tl.tasks.Task("two", digits.x_train, digits.y_train % 2, digits.x_test, digits.y_test % 2, 2)
        LOCKS.get("fresh-distill")(FreshDistillConfig(data="two", loop=LOOP)).use_tasks(other).apply(tiny_base, digits)
