import pytest
import torch
import torch.nn as nn

import trainlock as tl
from trainlock.locks import find_lockable, sigma_report, specdef, specdef_loop, spectral_term
from trainlock.registry import UnknownNameError
from trainlock.train import evaluate

LOCK = {"alpha": 0.5, "loop": specdef_loop(lr=5.0, epochs=3, batch_size=32, device="cpu")}


@pytest.fixture(scope="module")
def locked_report(tiny_base, digits):
    return tl.lock(tiny_base, tl.SpecDefConfig(**LOCK), digits).report


def test_lock_inflates_sigma_and_keeps_utility(locked_report, tiny_base, digits):
    rep = locked_report
    assert rep.sigma_after["mean_topk"] > 10 * rep.sigma_before["mean_topk"]
    for name, before in rep.sigma_before["layers"].items():
        assert rep.sigma_after["layers"][name][0] > 3 * before[0], name
    assert rep.accuracy_after >= rep.accuracy_before - 0.05
    assert rep.stopped is None
    assert [h["epoch"] for h in rep.history] == [1, 2, 3]
    assert rep.history[-1]["mean_topk_sigma"] > rep.history[0]["mean_topk_sigma"]


def test_lock_leaves_the_input_model_alone(locked_report, tiny_base, digits):
    assert rep_params_differ(locked_report.model, tiny_base)
    assert evaluate(tiny_base, digits) == locked_report.accuracy_before


def rep_params_differ(a, b):
    return any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=False))


def test_alpha_one_is_retain_training_only(tiny_base, digits):
    rep = tl.lock(
        tiny_base, tl.SpecDefConfig(loop=specdef_loop(lr=1.0, max_steps=20, device="cpu"), alpha=1.0), digits
    ).report
    ratio = rep.sigma_after["mean_topk"] / rep.sigma_before["mean_topk"]
    assert 0.8 < ratio < 1.25  # no spectral pressure: sigma moves only through the retain loss


def test_spectral_term_is_the_mean_of_every_top_k(tiny_base):
    lockables = find_lockable(tiny_base)
    term = spectral_term(lockables, 2)
    ref = torch.cat([torch.linalg.svdvals(l.param.detach())[:2] for l in lockables]).mean()
    torch.testing.assert_close(term.detach(), ref, rtol=1e-4, atol=1e-5)


def test_find_lockable_defaults_and_filters():
    model = tl.models.build("cnn", input_shape=[1, 8, 8], num_classes=3, channels=[2, 4], hidden=8)
    names = [l.name for l in find_lockable(model)]
    assert names == ["features.0.weight", "features.3.weight", "fc.weight", "head.weight"]
    assert [l.name for l in find_lockable(model, exclude="head")][-1] == "fc.weight"
    assert [l.name for l in find_lockable(model, include=r"^fc\.")] == ["fc.weight"]
    with pytest.raises(ValueError, match="no lockable weights"):
        find_lockable(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="include='nothing'"):
        find_lockable(model, include="nothing")


def test_any_module_with_a_matrix_parameter_can_be_locked(digits):
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.M = nn.Parameter(torch.randn(64, 10) * 0.1)

        def forward(self, x):
            return x.flatten(1) @ self.M

    model = Custom()
    rep = tl.lock(
        model, tl.SpecDefConfig(loop=specdef_loop(lr=1.0, max_steps=10, device="cpu"), include="M"), digits
    ).report
    assert rep.sigma_after["layers"]["M"][0] > rep.sigma_before["layers"]["M"][0]


def test_conv_operator_mode_and_kl_retain(digits):
    model = tl.models.build("cnn", input_shape=list(digits.input_shape), num_classes=10, channels=[2, 4], hidden=8)
    cfg = tl.SpecDefConfig(loop=specdef_loop(max_steps=5, device="cpu"), conv_mode="operator", retain="ce+kl", top_k=2)
    rep = tl.lock(model, cfg, digits).report
    conv = rep.sigma_after["layers"]["features.0.weight"]
    assert len(conv) == 2 and conv[0] >= conv[1] > 0
    lockables = find_lockable(rep.model, conv_mode="operator", sample=digits.x_train[:1])
    assert lockables[0].input_hw == (8, 8) and lockables[1].input_hw == (4, 4)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"alpha": 1.5}, "alpha"),
        ({"top_k": 0}, "top_k"),
        ({"retain": "mse"}, "retain"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tl.SpecDefConfig(**kwargs)


def test_bad_conv_mode_and_optimizer(tiny_base, digits):
    with pytest.raises(ValueError, match="conv_mode"):
        tl.lock(tiny_base, tl.SpecDefConfig(loop=specdef_loop(device="cpu"), conv_mode="exact"), digits)
    with pytest.raises(UnknownNameError, match="valid"):
        tl.lock(tiny_base, tl.SpecDefConfig(loop=specdef_loop(optimizer="lion", device="cpu")), digits)


def test_sigma_report_is_exact(tiny_base):
    rep = sigma_report(find_lockable(tiny_base), 3)
    W = tiny_base.head.weight.detach()
    assert rep["layers"]["head.weight"] == pytest.approx(torch.linalg.svdvals(W)[:3].tolist())


def test_non_finite_lock_stops_and_keeps_the_last_good_state(tiny_base, digits):
    cfg = tl.SpecDefConfig(loop=specdef_loop(optimizer="sgd", lr=1e38, epochs=1, device="cpu"), alpha=0.0)
    rep = specdef(tiny_base, cfg, digits, progress=False)  # the run itself: stopped, last good state kept
    assert rep.stopped and "non-finite" in rep.stopped and "restored the last good state" in rep.stopped
    assert all(torch.isfinite(p).all() for p in rep.model.parameters())
    with pytest.raises(ValueError, match="left the model unchanged"):  # and no certificate for a lock not there
        tl.lock(tiny_base, cfg, digits)


def test_the_final_accuracy_comes_from_the_last_epochs_measurement(tiny_base, digits, monkeypatch):
    import trainlock.locks.base as base

    calls = []
    monkeypatch.setattr(base, "evaluate", lambda m, t: calls.append(m) or evaluate(m, t))
    cfg = tl.SpecDefConfig(alpha=0.5, loop=specdef_loop(lr=5.0, epochs=2, batch_size=32, device="cpu"))
    rep = tl.lock(tiny_base, cfg, digits).report
    assert calls == [tiny_base]  # only the accuracy before: the last epoch ended on the last step
    assert rep.history[-1]["step"] == rep.steps
    assert rep.accuracy_after == rep.history[-1]["retain_accuracy"] == evaluate(rep.model, digits)
    # a loop that stops between epochs (max_steps) also ends with an epoch entry at its last step
    calls.clear()
    cfg = tl.SpecDefConfig(alpha=0.5, loop=specdef_loop(lr=5.0, epochs=2, max_steps=5, batch_size=32, device="cpu"))
    rep = tl.lock(tiny_base, cfg, digits).report
    assert rep.steps == 5 and len(calls) == 1 and rep.accuracy_after == evaluate(rep.model, digits)
