"""The conservation certificate: Pinsker, KL/TV, feature drift, the progress bound, and its re-check."""

import copy
import itertools
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trainlock.certify.conservation import (
    ConservationConfig,
    check_conservation,
    conservation_certificate,
    feature_drift,
    kl_tv,
    pinsker_bound,
    progress_bound,
)
from trainlock.certify.verify import verify
from trainlock.io.artifacts import META, save

LOGITS = st.integers(1, 6).flatmap(
    lambda n: st.integers(2, 6).flatmap(
        lambda k: st.tuples(
            arrays(np.float64, (n, k), elements=st.floats(-30, 30)),
            arrays(np.float64, (n, k), elements=st.floats(-30, 30)),
        )
    )
)


@settings(max_examples=150, deadline=None)
@given(LOGITS)
def test_pinsker_holds_per_input_and_on_averages(pair):
    a, b = (torch.from_numpy(x) for x in pair)
    kl, tv = kl_tv(a, b)
    assert (kl >= 0).all() and (tv >= 0).all() and (tv <= 1 + 1e-12).all()
    # Pinsker is tight to first order as TV -> 0 (KL = 2 TV^2 + O(TV^4)); KL is a sum of terms up to
    # ~30 in size, so its float64 rounding error is absolute, ~1e-14 (hypothesis found logits (1e-5, 0)
    # vs (0, 0): TV 2.5e-6, KL 1.25e-11 off by a few 1e-16): slack in KL, not in TV
    slack = 1e-14
    assert (tv <= torch.sqrt(kl / 2 + slack)).all()  # Pinsker, per input
    assert float(tv.mean()) <= pinsker_bound(float(kl.mean()) + slack)  # Pinsker + Jensen, on averages
    # TV is the largest change of any decision's probability: sup over label sets A of |P(A) - Q(A)|
    p, q = torch.softmax(a, 1), torch.softmax(b, 1)
    k = a.shape[1]
    subsets = [list(s) for r in range(k + 1) for s in itertools.combinations(range(k), r)]
    sup = torch.stack([(p[:, s].sum(1) - q[:, s].sum(1)).abs() for s in subsets]).max(0).values
    assert torch.allclose(sup, tv, atol=1e-12)


def test_kl_tv_known_values():
    p = torch.log(torch.tensor([[0.5, 0.5]]))
    q = torch.log(torch.tensor([[0.9, 0.1]]))
    kl, tv = kl_tv(p, q)
    assert float(tv) == pytest.approx(0.4)
    assert float(kl) == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1))
    assert kl_tv(p, p)[0].item() == 0 and kl_tv(p, p)[1].item() == 0


def test_identical_models_conserve_everything(tiny_base, digits):
    cert = conservation_certificate(tiny_base, copy.deepcopy(tiny_base), digits, config=ConservationConfig(epsilon=0.0))
    assert cert["kl"]["mean"] == 0 and cert["kl"]["max"] == 0
    assert cert["tv"]["mean"] == 0 and cert["tv"]["pinsker_bound"] == 0
    assert cert["accuracy"]["drop"] == 0 and cert["accuracy"]["holds"] and cert["holds"]
    assert set(cert["feature_drift"]) == {"body", "body.0", "head"}  # top-level children and every Linear
    assert all(d["drift"] == 0 and d["relative"] == 0 and d["ref_norm"] > 0 for d in cert["feature_drift"].values())
    assert cert["n_samples"] == len(digits.y_test)
    assert all(r["holds"] for r in check_conservation(cert))


@pytest.fixture(scope="module")
def perturbed(tiny_base):
    torch.manual_seed(1)
    model = copy.deepcopy(tiny_base)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_perturbed_model_gives_positive_numbers(tiny_base, perturbed, digits):
    cert = conservation_certificate(
        tiny_base, perturbed, digits, config=ConservationConfig(epsilon=0.05, max_samples=300)
    )
    kl, tv = cert["kl"], cert["tv"]
    # measured on the whole test set (seed 1, noise 0.05): mean KL 0.0090, mean TV 0.0218, Pinsker bound 0.0670,
    # max TV 0.300 <= sqrt(max KL / 2) = 0.338; relative drift about 0.10 per layer
    assert 0 < kl["mean"] < 1 and 0 < tv["mean"] <= tv["pinsker_bound"] < 1
    assert tv["max"] <= tv["pinsker_bound_max"]
    assert tv["pinsker_bound"] == pytest.approx(math.sqrt(kl["mean"] / 2))
    assert abs(cert["soft_accuracy"]["diff"]) <= tv["mean"]
    assert all(d["drift"] > 0 and 0 < d["relative"] < 1 for d in cert["feature_drift"].values())
    assert cert["n_samples"] == 300 and cert["tv"]["holds"] and cert["soft_accuracy"]["holds"]
    assert all(r["holds"] for r in check_conservation(cert)) == cert["accuracy"]["holds"]
    json.dumps(cert)  # JSON-ready


def test_feature_drift_names_layers_and_rejects_unknown(tiny_base, perturbed, digits):
    drift, lo, lm = feature_drift(tiny_base, perturbed, digits.x_test[:10], layers=["body.0"])
    assert list(drift) == ["body.0"] and lo.shape == lm.shape == (10, 10)
    with pytest.raises(ValueError, match="not found"):
        feature_drift(tiny_base, perturbed, digits.x_test[:10], layers=["nope"])


def test_accuracy_drop_beyond_epsilon_does_not_hold(tiny_base, digits):
    broken = copy.deepcopy(tiny_base)
    with torch.no_grad():
        broken.head.weight.zero_()
        broken.head.bias.copy_(torch.arange(10.0))  # always predicts class 9
    cert = conservation_certificate(tiny_base, broken, digits, config=ConservationConfig(epsilon=0.01, max_samples=200))
    assert cert["accuracy"]["drop"] > 0.5 and not cert["accuracy"]["holds"] and not cert["holds"]
    rows = {r["subject"]: r for r in check_conservation(cert)}
    assert not rows["accuracy drop"]["holds"] and rows["pinsker"]["holds"]


# ----------------------------------------------------------------------------- the progress bound


def test_progress_bound_arithmetic():
    out = progress_bound([1.0, 0.6, 0.3, 0.1])
    assert out["improvements"] == pytest.approx([0.4, 0.3, 0.2])
    assert out["delta"] == pytest.approx(0.2) and out["n_bound"] == pytest.approx(5.0)  # (1 - 0) / 0.2
    assert out["epochs"] == 3 and out["holds"]
    out = progress_bound([2.0, 1.5, 1.25], lower_bound=1.0)
    assert out["delta"] == pytest.approx(0.25) and out["n_bound"] == pytest.approx(4.0) and out["holds"]


@pytest.mark.parametrize(
    "series,lower,words",
    [
        ([1.0, 0.5, 0.5], 0.0, "no bound"),  # delta = 0
        ([1.0, 1.2, 0.5], 0.0, "did not improve"),  # delta < 0
        ([1.0, 0.5, 0.1], 0.2, "lower bound"),  # L* is wrong
        ([1.0], 0.0, "fewer than two"),
    ],
)
def test_no_bound_follows(series, lower, words):
    out = progress_bound(series, lower)
    assert out["n_bound"] is None and not out["holds"] and words in out["reason"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 100), min_size=2, max_size=12))
def test_progress_bound_is_never_violated_by_a_decreasing_run(values):
    series = sorted(values, reverse=True)
    out = progress_bound(series, 0.0)
    if out["delta"] > 0:
        assert out["epochs"] <= out["n_bound"] * (1 + 1e-9) and out["holds"]
    else:
        assert out["n_bound"] is None


def test_history_dicts_and_floats(tiny_base, digits):
    other = copy.deepcopy(tiny_base)
    hist = [
        {"epoch": 1, "retain_loss": 0.9, "mean_topk_sigma": 3.0},
        {"epoch": 2, "retain_loss": 0.5},
        {"epoch": 3, "retain_loss": 0.4},
    ]
    cert = conservation_certificate(tiny_base, other, digits, history=hist, config=ConservationConfig(max_samples=50))
    p = cert["progress"]
    assert p["key"] == "retain_loss" and p["delta"] == pytest.approx(0.1) and p["n_bound"] == pytest.approx(9.0)
    cert2 = conservation_certificate(
        tiny_base, other, digits, history=[3.0, 2.0, 2.5], config=ConservationConfig(max_samples=50)
    )
    assert cert2["progress"]["n_bound"] is None and cert2["holds"]  # no bound claimed is not a failed claim
    assert all(r["holds"] for r in check_conservation(cert2))
    with pytest.raises(ValueError, match="objective_key"):
        conservation_certificate(
            tiny_base, other, digits, history=[{"x": 1}, {"x": 0}], config=ConservationConfig(max_samples=50)
        )


# ----------------------------------------------------------------------------- re-checking stored numbers


@pytest.fixture(scope="module")
def stored(tiny_base, perturbed, digits):
    return conservation_certificate(
        tiny_base, perturbed, digits, history=[1.0, 0.6, 0.3], config=ConservationConfig(epsilon=1.0, max_samples=200)
    )


@pytest.mark.parametrize(
    "edit,subject",
    [
        (lambda c: c["tv"].update(mean=c["tv"]["pinsker_bound"] * 1.5), "pinsker"),
        (lambda c: c["tv"].update(pinsker_bound=c["tv"]["pinsker_bound"] * 2), "pinsker bound"),
        (lambda c: c["kl"].update(mean=c["kl"]["mean"] / 100), "pinsker"),
        (lambda c: c["accuracy"].update(drop=c["accuracy"]["drop"] + 0.25), "accuracy drop"),
        (lambda c: c["progress"].update(n_bound=100.0), "progress bound"),
        (lambda c: c["progress"].update(delta=0.01), "progress delta"),
        (lambda c: c["progress"].update(objective=[1.0, 0.6, 0.7]), "progress bound"),
    ],
)
def test_tampered_numbers_fail_the_recheck(stored, edit, subject):
    assert all(r["holds"] for r in check_conservation(stored))
    cert = json.loads(json.dumps(stored))
    edit(cert)
    bad = [r["subject"] for r in check_conservation(cert) if not r["holds"]]
    assert subject in bad


def test_verify_rechecks_a_saved_conservation_certificate(tiny_base, stored, tmp_path):
    path = save(tiny_base, tmp_path / "m", {"conservation": stored})
    report = verify(path)
    assert report.ok, report.table()
    assert {r.subject for r in report.rows if r.check == "conservation"} >= {
        "pinsker",
        "pinsker bound",
        "accuracy drop",
        "progress bound",
    }
    meta = json.loads((path / META).read_text())
    meta["conservation"]["tv"]["mean"] = 0.99
    (path / META).write_text(json.dumps(meta))
    bad = {(r.check, r.subject): r for r in verify(path).rows if not r.holds}
    assert ("conservation", "pinsker") in bad and "tv.mean" in bad["header", "conservation"].reason


@pytest.mark.parametrize("channels_last", [False, True])
def test_feature_drift_equals_the_mean_norm_of_each_inputs_change(channels_last):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(4 * 25, 3))
    other = copy.deepcopy(net)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(7, 2, 5, 5)
    if channels_last:
        net, other = net.to(memory_format=torch.channels_last), other.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    drift, _, _ = feature_drift(net, other, x, layers=["0", "2"], batch_size=3)  # batches of 3, 3 and 1
    with torch.no_grad():
        for name, f in (("0", lambda m: m[0](x)), ("2", lambda m: m(x))):
            a, b = f(net).double().reshape(7, -1), f(other).double().reshape(7, -1)
            ref_drift, ref_norm = float((b - a).norm(dim=1).mean()), float(a.norm(dim=1).mean())
            assert drift[name]["drift"] == pytest.approx(ref_drift, rel=1e-5)
            assert drift[name]["ref_norm"] == pytest.approx(ref_norm, rel=1e-5)
            assert drift[name]["relative"] == pytest.approx(ref_drift / ref_norm, rel=1e-5)
