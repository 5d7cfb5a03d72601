"""`probe-adversary`: the closed-form ridge probe is the textbook solve, its held-out score moves the features it
reads, and a few epochs on digits lower the proxy domain's probe accuracy while the authorized task stays;
its certificate tells the locked weights from the base's, and bad settings fail naming the field."""

import pytest
import torch

import trainlock as tl
from trainlock.locks import LOCKS, RecordedLock
from trainlock.locks.probing import FeatureTap, ProbeCheck, probe_scores, probe_term, ridge_probe, ridge_solve
from trainlock.models.blocks import feature_modules
from trainlock.train import clone_model

CHECK = {"samples": 1000, "test_samples": 360}
LOOP = {"optimizer": "adam", "lr": 1e-3, "epochs": 4, "batch_size": 32, "device": "cpu"}
RETAIN_TOLERANCE = 0.02  # the authorized task's test accuracy may drop at most this much
FAST = {"lam": [0.05], "probe_batch": 128}  # one penalty, smaller batches: the defaults (a grid, 256) cost 3x


def config(restricted: str, **extra) -> dict:
    return {"restricted": restricted, "alpha": 0.8, "loop": LOOP, "probe": CHECK, **FAST, **extra}


@pytest.fixture(scope="module")
def locked(tiny_base, digits, digits_permuted):
    lock = LOCKS.get("probe-adversary").from_config(config(digits_permuted.name)).use_tasks(digits_permuted)
    out = lock.apply(tiny_base, digits)
    return out, RecordedLock(lock, out.record)


@pytest.mark.parametrize("n,d", [(40, 6), (7, 15)])  # the primal form, and the dual form of a wide F
def test_ridge_solve_is_the_reference_least_squares_solve(n, d):
    g = torch.Generator().manual_seed(n)
    f, y, lam = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, 3, generator=g).double(), 0.3
    # ridge = least squares on F stacked over sqrt(lam) I, targets stacked over zeros
    ref = torch.linalg.lstsq(torch.cat([f, lam**0.5 * torch.eye(d, dtype=f.dtype)]), torch.cat([y, torch.zeros(d, 3)]))
    torch.testing.assert_close(ridge_solve(f, y, lam), ref.solution, rtol=1e-9, atol=1e-10)


def test_ridge_probe_is_scale_free_and_reads_linear_class_information():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    f = torch.randn(60, 5, generator=g) + 6.0 * torch.nn.functional.one_hot(y, 5).float()
    r2, acc = ridge_probe((f[:30], y[:30]), (f[30:], y[30:]), 3, 0.05)
    assert acc == 1.0 and r2 > 0.5
    shrunk = f * torch.tensor([1e-4, 1.0, 1e3, 1.0, 1.0])  # the attacker standardizes: scale is no defence
    r2s, _ = ridge_probe((shrunk[:30], y[:30]), (shrunk[30:], y[30:]), 3, 0.05)
    assert float(r2s) == pytest.approx(float(r2), rel=1e-6)
    noise = torch.randn(60, 5, generator=g)  # no class information: no better than the class frequencies
    r2n, _ = ridge_probe((noise[:30], y[:30]), (noise[30:], y[30:]), 3, 0.05)
    assert r2n < 0.1


def test_the_probe_term_has_a_gradient_that_moves_the_features(tiny_base, digits_permuted):
    model = clone_model(tiny_base).eval()
    tap = FeatureTap(model, "all")
    assert [n for n, _ in tap.sets] == [n for n, _ in feature_modules(model, "all")]  # the probe attack's sets
    x, y = digits_permuted.x_train[:256], digits_permuted.y_train[:256]
    _, feats = tap.read(model, x)
    term, stats = probe_term(feats, y, 10, 0.05, "max")
    assert term > 0 and stats["probe_accuracy"] > 0.5
    term.backward()
    assert float(model.body[0].weight.grad.abs().sum()) > 0  # it reaches the trunk
    assert model.head.weight.grad is None  # and not the head: the probe reads the head's input
    with torch.no_grad():
        for p in model.body.parameters():
            p -= 0.05 * p.grad
    _, moved = tap.read(model, x)
    after, _ = probe_term(moved, y, 10, 0.05, "max")
    tap.close()
    assert not torch.allclose(moved["head:input"], feats["head:input"].detach())
    assert after < term  # a step against the term lowers it


def test_the_lock_lowers_the_proxy_probe_and_keeps_the_retain_task(locked, tiny_base, digits, digits_permuted):
    out, _ = locked
    check = ProbeCheck(**CHECK)
    base_probe, locked_probe = (max(probe_scores(m, digits_permuted, check).values()) for m in (tiny_base, out.model))
    assert locked_probe < base_probe - 0.15, (base_probe, locked_probe)  # about 0.90 -> 0.59
    assert tl.evaluate(out.model, digits) >= tl.evaluate(tiny_base, digits) - RETAIN_TOLERANCE
    assert out.report.history[-1]["probe_r2"] < out.report.history[0]["probe_r2"]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in out.model.modules())  # the taps are gone


def test_the_certificate_holds_on_the_locked_weights_and_fails_on_the_base(locked, tiny_base):
    out, recorded = locked
    assert out.record.max_accuracy is None  # no simulated attack: nothing claimed about fine-tuning
    assert out.record.probe_max_accuracy == pytest.approx(out.record.probe_at_lock + 0.02)
    (cert,) = recorded.certify(out.model)
    assert cert.holds and cert.lock == "probe-adversary" and cert.relation == "<=" and cert.adversary_can_remove
    assert "logistic regression" in cert.preservation and "held-back" in cert.preservation  # what it does not claim
    assert cert.measured == pytest.approx(out.record.probe_at_lock)
    (on_base,) = recorded.certify(tiny_base)
    assert not on_base.holds and on_base.measured > cert.required


def test_only_the_named_proxy_tasks_are_read(tiny_base, digits, digits_permuted):
    other = tl.tasks.permuted(digits, seed=2)
    lock = LOCKS.get("probe-adversary").from_config(
        config(digits_permuted.name, proxies=[other.name], loop={**LOOP, "max_steps": 4})
    )
    lock.use_tasks(digits_permuted, other)
    asked = []
    task = lock.task
    lock.task = lambda name: asked.append(name) or task(name)
    lock.apply(tiny_base, digits)
    assert set(asked) == {digits_permuted.name, other.name}


@pytest.mark.parametrize(
    "bad,field",
    [({"alpha": 1.5}, "alpha"), ({"alpha": -0.1}, "alpha"), ({"lam": 0.0}, "lam"), ({"reduce": "min"}, "reduce")],
)
def test_bad_settings_fail_naming_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        LOCKS.get("probe-adversary").from_config({"restricted": "digits", **bad})


@pytest.mark.parametrize("field", ["restricted", "proxies"])
def test_an_unknown_proxy_task_fails_naming_the_field(field, tiny_base, digits, digits_permuted):
    spec = {"restricted": digits_permuted.name, field: ["no-such-task"] if field == "proxies" else "no-such-task"}
    lock = LOCKS.get("probe-adversary").from_config({**spec, "loop": {**LOOP, "max_steps": 1}})
    with pytest.raises(ValueError, match=f"{field}: unknown task 'no-such-task'"):
        lock.use_tasks(digits_permuted).apply(tiny_base, digits)


def test_the_retain_task_cannot_be_a_proxy(tiny_base, digits, digits_permuted):
    lock = LOCKS.get("probe-adversary").from_config({"restricted": digits_permuted.name, "proxies": ["digits"]})
    with pytest.raises(ValueError, match="proxies: 'digits' is the retain"):
        lock.use_tasks(digits_permuted).apply(tiny_base, digits)
