"""`mlac`: its probe adversary is the reference closed-form ridge fit, its fine-tuning adversary is sophon's
first-order inner loop, a few epochs on digits lower the proxy domain's probe accuracy (and the simulated
fine-tuning attack's) while the authorized task stays, its certificates tell the locked weights from the
base's, and bad settings fail naming the field."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import trainlock as tl
from trainlock.locks import LOCKS, RecordedLock
from trainlock.locks.probing import FeatureTap, ProbeCheck, probe_scores, ridge_probe
from trainlock.locks.restricted import SimulatedAttack, endless, simulated_attack
from trainlock.locks.sophon import SophonConfig, suppression_gradients
from trainlock.train import clone_model

CHECK = {"samples": 1000, "test_samples": 360}
ATTACK = {"steps": 60, "lr": 1e-3}
# The fresh-head attack's claim: the base reaches 0.32 on digits-permuted-1 after ATTACK, the locked weights 0.27
# (the probe adversary's share; the simulated fine-tuning adversary alone, probe_weight 0, leaves 0.32). The
# default claim (chance + 0.10 = 0.20) does not hold here: see notes/frontier.md.
CLAIM = 0.30
LOOP = {"optimizer": "adam", "lr": 1e-3, "epochs": 4, "batch_size": 32, "device": "cpu"}
RETAIN_TOLERANCE = 0.02  # the authorized task's test accuracy may drop at most this much
FAST = {"lam": [0.05], "probe_batch": 128}  # one penalty, smaller batches: the defaults (a grid, 256) cost 3x


def config(restricted: str, **extra) -> dict:
    attack = {**ATTACK, "max_accuracy": CLAIM}
    return {"restricted": restricted, "alpha": 0.8, "loop": LOOP, "attack": attack, "probe": CHECK, **FAST, **extra}


@pytest.fixture(scope="module")
def locked(tiny_base, digits, digits_permuted):
    lock = LOCKS.get("mlac").from_config(config(digits_permuted.name)).use_tasks(digits_permuted)
    out = lock.apply(tiny_base, digits)
    return out, RecordedLock(lock, out.record)


def test_the_probe_adversary_is_the_reference_ridge_fit():
    """Standardize on the fitted half, least squares with an unpenalized intercept and a penalty lam * n on the
    weights (numpy's lstsq on the stacked system), score the other half: the same R^2 and accuracy."""
    g = np.random.default_rng(0)
    y = np.arange(48) % 4
    f = g.normal(size=(48, 6)) + 1.5 * np.eye(6)[y]
    lam, (a, b), (ya, yb) = 0.2, (f[:24], f[24:]), (y[:24], y[24:])
    mu, sd = a.mean(0), a.std(0)
    za, zb = (a - mu) / sd, (b - mu) / sd
    stacked = np.block([[za, np.ones((24, 1))], [np.sqrt(lam * 24) * np.eye(6), np.zeros((6, 1))]])
    targets = np.vstack([np.eye(4)[ya], np.zeros((6, 4))])
    coef = np.linalg.lstsq(stacked, targets, rcond=None)[0]
    pred = np.hstack([zb, np.ones((24, 1))]) @ coef
    t = np.eye(4)[yb]
    r2_ref = 1 - ((t - pred) ** 2).sum(1).mean() / ((t - np.eye(4)[ya].mean(0)) ** 2).sum(1).mean()
    r2, acc = ridge_probe((torch.tensor(a), torch.tensor(ya)), (torch.tensor(b), torch.tensor(yb)), 4, lam)
    assert float(r2) == pytest.approx(r2_ref, rel=1e-9)
    assert float(acc) == pytest.approx(float((pred.argmax(1) == yb).mean()))


def _gradient(model, loss) -> list[torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def test_the_fine_tuning_adversary_is_sophons_inner_loop(tiny_base, digits, digits_permuted):
    """probe_weight 0, kl_weight 0: the gradient is alpha * sophon's first-order suppression gradient (with a
    fresh head on the head's input, drawn from the same generator state) + (1 - alpha) * the retain
    cross-entropy's."""
    cfg = config(digits_permuted.name, probe_weight=0.0, kl_weight=0.0, inner_steps=2, alpha=0.6)
    lock = LOCKS.get("mlac").from_config(cfg).use_tasks(digits_permuted)
    model = clone_model(tiny_base)
    loss_fn, _, cleanup = lock.objective(model, digits_permuted, endless(digits_permuted, 32, 7))
    x, y = digits.x_train[:32], digits.y_train[:32]
    torch.manual_seed(5)
    got = _gradient(model, loss_fn(model, x, y)[0])
    cleanup()
    inner = SophonConfig(restricted="x", inner_steps=2, inner_lr=lock.cfg.inner_lr)
    tap = FeatureTap(model, "head")
    torch.manual_seed(5)
    sup, _ = suppression_gradients(model, endless(digits_permuted, 32, 7), inner, digits_permuted, tap)
    tap.close()
    ce = _gradient(model, F.cross_entropy(model(x), y))
    for g, s, c in zip(got, sup, ce, strict=True):
        torch.testing.assert_close(g, 0.6 * s + 0.4 * c, rtol=1e-4, atol=1e-6)


def test_the_fresh_head_adversary_is_the_reference_and_needs_no_shared_classes(tiny_base, digits):
    """No simulated step: the suppression gradient is that of -log(1 - p_y) under a fresh nn.Linear head (drawn
    from torch's generator) on the head's input features; the released head gets none. A 3-class model is
    attacked on a 10-class proxy (the head-reuse adversary refused that)."""
    model = clone_model(tiny_base)
    head = model.net[-1] if hasattr(model, "net") else list(model.modules())[-1]
    tap = FeatureTap(model, "head")
    x, y = digits.x_train[:64], digits.y_train[:64]
    torch.manual_seed(11)
    sup, loss = suppression_gradients(model, iter([(x, y)]), SophonConfig(restricted="x", inner_steps=0), digits, tap)
    torch.manual_seed(11)
    _, feats = tap.read(model, x)
    tap.close()
    lin = torch.nn.Linear(next(iter(feats.values())).shape[1], 10)
    p = F.softmax(lin(next(iter(feats.values()))), 1).gather(1, y[:, None]).squeeze(1)
    ref = -torch.log1p(-p.clamp(max=1 - 1e-6)).mean()
    model.zero_grad(set_to_none=True)
    ref.backward()
    want = [torch.zeros_like(q) if q.grad is None else q.grad.clone() for q in model.parameters()]
    assert abs(loss - float(ref.detach())) < 1e-5
    named = [n for n, _ in model.named_parameters()]
    for g, w in zip(sup, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)
    assert all(
        float(g.abs().sum()) == 0 for n, g in zip(named, sup, strict=True) if n.startswith(_head_prefix(model, head))
    )
    three = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    tap3 = FeatureTap(three, "head")
    g3, _ = suppression_gradients(
        three, endless(digits, 32, 1), SophonConfig(restricted="x", inner_steps=2), digits, tap3
    )
    tap3.close()
    assert float(g3[0].abs().sum()) > 0 and float(g3[-1].abs().sum()) == 0


def _head_prefix(model, head) -> str:
    return next(n for n, m in model.named_modules() if m is head)


def test_the_probe_adversarys_gradient_moves_the_features(tiny_base, digits, digits_permuted):
    cfg = config(digits_permuted.name, probe_weight=1.0, kl_weight=0.0, alpha=1.0)
    lock = LOCKS.get("mlac").from_config(cfg).use_tasks(digits_permuted)
    model = clone_model(tiny_base)
    loss_fn, sums, cleanup = lock.objective(model, digits_permuted, endless(digits_permuted, 32, 0))
    x = digits_permuted.x_train[:256]
    before = model.body[0](x.flatten(1)).detach()
    first = loss_fn(model, digits.x_train[:32], digits.y_train[:32])[0]
    grads = _gradient(model, first)
    assert float(first.detach()) > 0 and float(grads[0].abs().sum()) > 0  # it reaches the first layer
    assert float(grads[-1].abs().sum()) == 0  # not the head: the probe reads the head's input (alpha 1: no CE)
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads, strict=True):
            p -= 0.05 * g
    assert not torch.allclose(model.body[0](x.flatten(1)), before)
    cleanup()
    assert sums["n"] == 1 and sums["probe_accuracy"] > 0.5


def test_the_lock_lowers_the_proxy_probe_and_keeps_the_retain_task(locked, tiny_base, digits, digits_permuted):
    out, recorded = locked
    check = ProbeCheck(**CHECK)
    base_probe, locked_probe = (max(probe_scores(m, digits_permuted, check).values()) for m in (tiny_base, out.model))
    assert locked_probe < base_probe - 0.15, (base_probe, locked_probe)  # about 0.90 -> 0.61
    assert tl.evaluate(out.model, digits) >= tl.evaluate(tiny_base, digits) - RETAIN_TOLERANCE
    assert recorded.lock.cfg.attack.head == "fresh"  # the attack the lock trained against: a new head
    base_attack = simulated_attack(tiny_base, digits_permuted, SimulatedAttack(**ATTACK, head="fresh"))
    attack_cert, _ = recorded.certify(out.model)
    assert attack_cert.measured <= base_attack  # the fine-tuning adversary's share: its own attack does no better


def test_the_certificates_hold_on_the_locked_weights_and_the_probes_fails_on_the_base(
    locked, tiny_base, digits_permuted
):
    out, recorded = locked
    attack_cert, probe_cert = recorded.certify(out.model)
    assert attack_cert.holds and probe_cert.holds
    assert attack_cert.required == CLAIM
    base_attack, _ = recorded.certify(tiny_base)
    assert not base_attack.holds  # the claim tells the locked weights from the base's
    assert probe_cert.required == pytest.approx(out.record.probe_at_lock + 0.02)
    assert {attack_cert.lock, probe_cert.lock} == {"mlac"} and "held-back" in probe_cert.preservation
    _, on_base = recorded.certify(tiny_base)
    assert not on_base.holds and on_base.measured > probe_cert.required


@pytest.mark.parametrize(
    "bad,field",
    [
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.5}, "alpha"),
        ({"probe_weight": 2.0}, "probe_weight"),
        ({"inner_steps": -1}, "inner_steps"),
        ({"layers": "some"}, "layers"),
    ],
)
def test_bad_settings_fail_naming_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        LOCKS.get("mlac").from_config({"restricted": "digits", **bad})


@pytest.mark.parametrize("field", ["restricted", "proxies"])
def test_an_unknown_proxy_task_fails_naming_the_field(field, tiny_base, digits, digits_permuted):
    spec = {"restricted": digits_permuted.name, field: ["no-such-task"] if field == "proxies" else "no-such-task"}
    lock = LOCKS.get("mlac").from_config({**spec, "loop": {**LOOP, "max_steps": 1}})
    with pytest.raises(ValueError, match=f"{field}: unknown task 'no-such-task'"):
        lock.use_tasks(digits_permuted).apply(tiny_base, digits)
