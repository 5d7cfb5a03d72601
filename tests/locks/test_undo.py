"""`undo` (UNDO, arXiv 2506.06278): the student starts at (1 - noise) * base + noise * fresh and is distilled like
fresh-distill; the certificate tells the released weights from the base's; the noise seed stays out of the public
record."""

import itertools
from types import SimpleNamespace

import pytest
import torch

import trainlock as tl
from trainlock.io.artifacts import load, save
from trainlock.io.release import public_meta
from trainlock.locks import LOCKS
from trainlock.locks import undo as undo_module
from trainlock.locks.fresh_distill import fresh_student
from trainlock.locks.undo import UndoConfig, noised, ramp
from trainlock.train import reinitialized

LOOP = {"optimizer": "adam", "lr": 3e-3, "epochs": 2, "batch_size": 32, "device": "cpu"}


@pytest.fixture
def fixed_draws(monkeypatch):
    """The lock's random draws (an unset noise seed, the sketch seed) made fixed, as the suite's seeds are."""
    draws = itertools.count(1000, 17)
    monkeypatch.setattr(undo_module, "secrets", SimpleNamespace(randbits=lambda bits: next(draws)))


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_ends_of_the_dial_are_the_base_and_fresh_distills_start(tiny_base):
    base = state(tiny_base)
    at0, kept = noised(tiny_base, 0.0, seed=7)
    assert kept == [] and same(state(at0), base)
    at1, _ = noised(tiny_base, 1.0, seed=7)
    fresh, _ = fresh_student(tiny_base, 7, (), "fresh-distill")  # what fresh-distill trains from
    assert same(state(at1), state(fresh)) and same(state(at1), state(reinitialized(tiny_base, 7)))
    assert not same(state(at1), base)
    assert same(state(tiny_base), base)  # the input is left alone


def test_the_start_interpolates_each_parameter_exactly(tiny_base):
    noise, seed = 0.3, 11
    start, _ = noised(tiny_base, noise, seed)
    fresh = reinitialized(tiny_base, seed)
    b, f = tiny_base.body[0].weight, fresh.body[0].weight
    assert torch.equal(start.body[0].weight, (1 - noise) * b + noise * f)
    torch.testing.assert_close(start.head.bias, torch.lerp(tiny_base.head.bias, fresh.head.bias, noise))
    # kept parameters stay the base's bit for bit (not (1 - a) b + a b), frozen for the distillation
    kept_start, kept = noised(tiny_base, noise, seed, keep=(r"^head\.",))
    assert kept == ["head.weight", "head.bias"] and torch.equal(kept_start.head.weight, tiny_base.head.weight)
    assert not kept_start.head.weight.requires_grad and kept_start.body[0].weight.requires_grad
    assert torch.equal(kept_start.body[0].weight, start.body[0].weight)
    with pytest.raises(ValueError, match="noise"):
        noised(tiny_base, 1.5, seed)


@pytest.mark.parametrize("noise", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_the_depth_profile_ramps_towards_the_output_with_the_same_mean(tiny_base, noise):
    """profile "depth": each tensor is (1 - w) b + w f with w the ramp's value at its place in state-dict order;
    the ramp is monotone, within [0, 1], and its mean is the uniform profile's noise."""
    w = ramp(noise, 4)
    assert w == sorted(w) and all(0 <= v <= 1 for v in w) and sum(w) / 4 == pytest.approx(noise)
    assert ramp(0.25, 2) == pytest.approx([0.125, 0.375]) and ramp(0.75, 2) == pytest.approx([0.625, 0.875])
    seed = 11
    start, _ = noised(tiny_base, noise, seed, profile="depth")
    fresh = reinitialized(tiny_base, seed).state_dict()
    names = list(tiny_base.state_dict())
    for name, v in zip(names, ramp(noise, len(names)), strict=True):
        b = tiny_base.state_dict()[name]
        torch.testing.assert_close(start.state_dict()[name], (1 - v) * b + v * fresh[name])
    with pytest.raises(ValueError, match="profile"):
        UndoConfig(profile="middle")


def test_config_checks():
    with pytest.raises(ValueError, match="undo: noise"):
        UndoConfig(noise=-0.1)
    with pytest.raises(ValueError, match="undo: max_closed"):
        UndoConfig(max_closed=2.0)
    with pytest.raises(ValueError, match="regular expression"):
        UndoConfig(keep=("(",))
    with pytest.raises(ValueError, match="match no parameter"):
        LOCKS.get("undo").from_config({"keep": ["nothing-here"], "loop": LOOP}).apply(
            tl.models.build("mlp", input_shape=[1, 8, 8], num_classes=10, hidden=[8]), tl.tasks.get("digits")
        )
    assert UndoConfig().noise == 0.5 and UndoConfig().augment == "none"


def test_undo_keeps_more_utility_than_fresh_distill_on_the_same_budget(tiny_base, digits):
    """The reference: fresh-distill (noise 1) with the same loop and seed. Starting half-way, undo must do at least
    as well and win back at least half of what fresh-distill loses against the base."""
    acc_base = tl.train.evaluate(tiny_base, digits)
    fresh = LOCKS.get("fresh-distill").from_config({"loop": LOOP, "seed": 3}).apply(tiny_base, digits)
    out = LOCKS.get("undo").from_config({"loop": LOOP, "seed": 3, "noise": 0.5}).apply(tiny_base, digits)
    acc_fresh, acc_undo = fresh.report.accuracy_after, tl.train.evaluate(out.model, digits)
    assert out.report.accuracy_after == acc_undo and out.report.accuracy_before == acc_base
    assert acc_fresh < acc_base  # the budget is short enough that starting from scratch costs something
    assert acc_undo >= acc_fresh and acc_undo >= acc_base - (acc_base - acc_fresh) / 2, (acc_base, acc_fresh, acc_undo)


def test_certificate_holds_on_the_release_and_fails_on_the_base(tiny_base, digits, fixed_draws):
    lock = LOCKS.get("undo").from_config({"loop": LOOP, "noise": 0.8})
    out = lock.apply(tiny_base, digits)
    rec = out.record
    assert rec.retain_task == "digits" and set(rec.sketches) == set(rec.start) == {"body.0.weight", "head.weight"}
    assert all(c0 < 0.9 for c0 in rec.start.values())  # noise 0.8 moved every weight well away from the base
    (cert,) = lock.certify(out.model, rec)
    assert cert.holds and cert.measured <= 0.75 and not cert.details["base_passes"]
    (on_base,) = lock.certify(tiny_base, rec)  # the base closes the whole gap
    assert not on_base.holds and on_base.measured == pytest.approx(1.0, abs=1e-4)
    # the noise seed: drawn, given to the owner's run report only, never to the config or the record
    seed = out.report.config["seed"]
    assert isinstance(seed, int) and lock.cfg.seed is None and "seed" not in lock.record_to_dict(rec)
    # at noise 0 nothing moved: the certificate holds and claims nothing (the base passes too)
    zero = LOCKS.get("undo").from_config({"loop": {**LOOP, "max_steps": 2}, "noise": 0.0, "seed": 1})
    z = zero.apply(tiny_base, digits)
    (c,) = zero.certify(tiny_base, z.record)
    assert c.holds and c.details["base_passes"] and c.details["not_moved"] == ["body.0.weight", "head.weight"]


def test_save_load_recertifies_and_the_release_drops_the_seed(tiny_base, digits, tmp_path, fixed_draws):
    spec = {"type": "undo", "noise": 0.9, "seed": 12345, "loop": LOOP}
    res = tl.lock(tiny_base, spec, retain=digits)
    assert all(c["holds"] for c in res.record["certificates"])
    save(res.model, tmp_path / "m", {"task": "digits", **res.record})
    model, meta = load(tmp_path / "m")
    (entry,) = meta["locks"]
    assert entry["config"]["seed"] == 12345 and entry["private"] == ["seed"]  # the owner's copy keeps it
    again = tl.locks.lock_from_meta(meta["locks"]).certify(model)
    assert all(c.holds for c in again)
    assert again[0].measured == pytest.approx(res.record["certificates"][0]["measured"])
    public = public_meta(meta)
    assert "seed" not in public["locks"][0]["config"] and "lock" not in public  # nor the run report
    assert "12345" not in str(public)
    from_public = tl.locks.lock_from_meta(public["locks"]).certify(model)  # certifiable without the seed
    assert [c.holds for c in from_public] == [True]


def test_a_batchnorm_network_is_scored_with_recomputed_statistics(digits):
    """The EfficientNet failure in miniature: a base with TensorFlow-style BatchNorm momentum (0.01), noised half
    way (its running statistics a mixture of the base's and a fresh network's) and distilled briefly. Without
    recomputing the statistics on the clean inputs the released model scored chance in eval mode while its
    training loss fell; with them it keeps most of the base's accuracy."""
    torch.manual_seed(0)
    d = digits.x_train[0].numel()
    base = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(d, 64),
        torch.nn.BatchNorm1d(64, momentum=0.01),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.BatchNorm1d(64, momentum=0.01),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )
    tl.train.fit(base, digits, tl.train.LoopConfig(**{**LOOP, "epochs": 3}), progress=False)
    tl.train.recalibrate_batchnorm(base, digits.x_train)
    acc_base = tl.train.evaluate(base, digits)
    loop = {**LOOP, "epochs": 1, "max_steps": 20}
    out = LOCKS.get("undo").from_config({"loop": loop, "seed": 3, "noise": 0.5}).apply(base, digits)
    assert acc_base > 0.9
    assert out.report.accuracy_after > acc_base - 0.1, (acc_base, out.report.accuracy_after)
