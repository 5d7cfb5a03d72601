"""LockMonitor: the first step at which an attack breaks a lock, in finetune and in any loop."""

import copy
import hashlib

import pytest
import torch
import torch.nn as nn

import trainlock as tl
from trainlock.attacks.finetune import finetune
from trainlock.certify.monitor import LockMonitor
from trainlock.locks.base import Certificate, NoRecord, RecordedLock
from trainlock.locks.frozen import FrozenConfig, FrozenLock
from trainlock.locks.spectral_cap import SpectralCapConfig, SpectralCapLock
from trainlock.train import LoopConfig, LoopHooks, fit


def attack_cfg(lr: float, max_steps: int) -> "tl.FineTuneConfig":
    loop = LoopConfig(optimizer="sgd", lr=lr, max_steps=max_steps, batch_size=32, device="cpu")
    return tl.FineTuneConfig(loop=loop, eval_every=1000)


class ToyFrozenLock:
    """Stand-in for the `frozen` lock: one tensor keeps its SHA-256 (requires_grad=False on apply)."""

    name = "toy-frozen"

    def __init__(self, param: str):
        self.param, self.hash = param, None

    @staticmethod
    def _sha(t):
        return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()

    def apply(self, model, retain=None):
        model = copy.deepcopy(model)
        p = dict(model.named_parameters())[self.param]
        p.requires_grad_(False)
        self.hash = self._sha(p)
        return model

    def config(self):
        return {"param": self.param}

    def certify(self, model):
        same = self._sha(dict(model.named_parameters())[self.param]) == self.hash
        return [
            Certificate(
                lock=self.name,
                invariant=f"SHA-256 of {self.param} unchanged",
                measured=float(same),
                required=1.0,
                relation="==",
                proof_of_gap="toy",
                preservation="toy",
                threat_model="training-time",
                adversary_can_remove=True,
                removal="toy",
                method="sha256",
            )
        ]


class ToySpectralCap:
    """Stand-in for `spectral-cap`: max over 2-D weights of sigma_max(W) <= cap."""

    name = "toy-spectral-cap"

    def __init__(self, cap: float):
        self.cap = cap

    def certify(self, model):
        worst = max(
            float(torch.linalg.matrix_norm(p.detach().double(), ord=2)) for p in model.parameters() if p.ndim == 2
        )
        return [
            Certificate(
                lock=self.name,
                invariant="max sigma_max(W)",
                measured=worst,
                required=self.cap,
                relation="<=",
                proof_of_gap="toy",
                preservation="toy",
                threat_model="training-time",
                adversary_can_remove=True,
                removal="toy",
                method="svd",
            )
        ]


def _frozen_lock(param: str, kind: str = "real"):
    """The real `frozen` lock (kind="real"), else the toy."""
    if kind == "toy":
        return ToyFrozenLock(param)
    return FrozenLock(FrozenConfig(names=(f"^{param}$",)))


def _lock(lock, model):
    """(locked model, what the monitor certifies): the real lock bound to the record its apply returned (a
    RecordedLock certifies from the weights alone), or the toy, which keeps its hash itself."""
    if isinstance(lock, ToyFrozenLock):
        return lock.apply(model), lock
    out = lock.apply(model)
    return out.model, RecordedLock(lock, out.record)


def _key(lock, model):
    (cert,) = lock.certify(model)
    return f"{cert.lock}: {cert.invariant}"


@pytest.mark.parametrize("kind,every", [("real", 1), ("real", 3), ("toy", 1)])
def test_first_step_an_attack_breaks_a_frozen_lock(tiny_base, digits_permuted, kind, every):
    locked, lock = _lock(_frozen_lock("body.0.weight", kind), tiny_base)
    key = _key(lock, locked)
    cfg = attack_cfg(0.1, 7)

    kept = LockMonitor(lock, every=every)  # the lock's own mechanism: the frozen weight gets no update
    res = finetune(locked, cfg, digits_permuted, progress=False, monitor=kept)
    assert kept.first_broken == {} and res.monitor_first_broken == {}
    assert [h["step"] for h in kept.history] == list(range(0, 8, every))
    assert all(h["all_hold"] for h in kept.history)

    unfrozen = copy.deepcopy(locked)  # the attacker holds the weights: requires_grad back on
    for p in unfrozen.parameters():
        p.requires_grad_(True)
    mon = LockMonitor(lock, every=every)
    res = finetune(unfrozen, cfg, digits_permuted, progress=False, monitor=mon)
    # the weight changes at step 1; the first check after that is at step `every`
    assert mon.first_broken == {key: every}
    assert mon.history[0] == {
        "step": 0,
        "loss": None,
        "holds": {key: True},
        "measured": mon.history[0]["measured"],
        "all_hold": True,
    }
    assert res.to_dict()["monitor_first_broken"] == {key: every}
    assert res.steps == 7 and res.diverged is None  # no stop_on_break: the attack ran on


def test_no_monitor_leaves_the_result_as_it_was(tiny_base, digits_permuted):
    res = finetune(tiny_base, attack_cfg(0.1, 2), digits_permuted, progress=False)
    assert res.monitor_first_broken is None and "monitor_first_broken" not in res.to_dict()


def _sigma_trajectory(model, task, lr, steps):
    """max sigma_max after each step 0..steps, recorded by a monitor whose check always holds."""
    cap = ToySpectralCap(float("inf"))
    rec = LockMonitor(
        lambda m: [{"lock": "rec", "invariant": "sigma", "holds": True, "measured": cap.certify(m)[0].measured}],
        every=1,
    )
    finetune(model, attack_cfg(lr, steps), task, progress=False, monitor=rec)
    return [h["measured"]["rec: sigma"] for h in rec.history]


def test_a_big_lr_attack_breaks_a_spectral_cap_at_a_recorded_step(tiny_base, digits_permuted):
    sigma0 = ToySpectralCap(0).certify(tiny_base)[0].measured
    lock = ToySpectralCap(1.25 * sigma0)
    key = "toy-spectral-cap: max sigma_max(W)"
    steps = 30
    # measured (seed 0): sigma_max 5.82 -> 6.71 (step 4) -> 7.87 (step 5) > cap 7.27 -> 28.1 (step 30) at lr 0.5
    trajectory = _sigma_trajectory(tiny_base, digits_permuted, 0.5, steps)
    expected = next(step for step, s in enumerate(trajectory) if s > lock.cap)
    assert 1 < expected < steps

    for every in (1, 2):
        mon = LockMonitor(lock, every=every)
        res = finetune(tiny_base, attack_cfg(0.5, steps), digits_permuted, progress=False, monitor=mon)
        first_check_after = -(-expected // every) * every
        assert mon.first_broken == {key: first_check_after}
        assert res.monitor_first_broken == {key: first_check_after}
        measured = {h["step"]: h["measured"][key] for h in mon.history}
        assert measured[first_check_after] > lock.cap >= max(v for s, v in measured.items() if s < first_check_after)

    stop = LockMonitor(lock, every=1, stop_on_break=True)
    res = finetune(tiny_base, attack_cfg(0.5, steps), digits_permuted, progress=False, monitor=stop)
    assert res.steps == expected == stop.stopped_at and f"at step {expected}" in res.diverged

    small = LockMonitor(lock, every=1)
    finetune(tiny_base, attack_cfg(0.05, steps), digits_permuted, progress=False, monitor=small)
    assert small.first_broken == {} and len(small.history) == steps + 1


def test_real_spectral_cap_certificate_in_the_monitor(tiny_base, digits_permuted):
    sigma0 = ToySpectralCap(0).certify(tiny_base)[0].measured
    cap = SpectralCapLock(SpectralCapConfig(max_sigma=1.25 * sigma0))
    lock = RecordedLock(cap, NoRecord())  # the cap measures nothing at lock time: it certifies from the weights
    mon = LockMonitor(lock, every=1)
    finetune(tiny_base, attack_cfg(0.5, 10), digits_permuted, progress=False, monitor=mon)
    toy = LockMonitor(ToySpectralCap(1.25 * sigma0 * (1 + cap.cfg.tol)), every=1)
    finetune(tiny_base, attack_cfg(0.5, 10), digits_permuted, progress=False, monitor=toy)
    assert list(mon.first_broken.values()) == list(toy.first_broken.values()) and mon.first_broken


# ----------------------------------------------------------------------------- any training loop


def test_monitor_in_fit_and_in_a_hand_written_loop(digits):
    torch.manual_seed(0)
    model = tl.models.build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[8])
    model, lock = _lock(_frozen_lock("head.bias"), model)
    model.head.bias.requires_grad_(True)
    mon = LockMonitor(lock, every=2, model=model)
    res = fit(
        model,
        digits,
        LoopConfig(optimizer="sgd", lr=0.1, max_steps=5, batch_size=32, device="cpu"),
        hooks=LoopHooks(on_step=mon),
        progress=False,
    )
    assert res.steps == 5 and mon.first_broken == {_key(lock, model): 2}
    assert [h["step"] for h in mon.history] == [2, 4]

    # a loop that is not fit: the monitor is just a callable with an optional loss
    w = nn.Parameter(torch.zeros(3))
    calls = []
    mon = LockMonitor(
        lambda: [
            {
                "lock": "norm",
                "invariant": "|w| <= 1",
                "holds": float(w.detach().norm()) <= 1,
                "measured": float(w.detach().norm()),
            }
        ],
        every=1,
        stop_on_break=True,
    )
    opt = torch.optim.SGD([w], lr=0.3)
    for step in range(1, 20):
        opt.zero_grad()
        loss = -w.sum()
        loss.backward()
        opt.step()
        calls.append(step)
        if mon(step, float(loss.detach())):
            break
    # |w| = 0.3 * sqrt(3) * step > 1 first at step 2
    assert mon.first_broken == {"norm: |w| <= 1": 2} and calls[-1] == 2 and mon.history[-1]["loss"] is not None


def test_monitor_arguments():
    with pytest.raises(ValueError, match="every"):
        LockMonitor(ToySpectralCap(1.0), every=0)
    with pytest.raises(RuntimeError, match="no model"):
        LockMonitor(ToySpectralCap(1.0)).check(0)
    with pytest.raises(TypeError):
        LockMonitor([1, 2])
    two = LockMonitor([ToySpectralCap(1e9), ToySpectralCap(0.0)], model=nn.Linear(2, 2))
    assert two(0) is None and two.first_broken == {"toy-spectral-cap: max sigma_max(W) [2]": 0}
    assert two.summary()["checks"] == 1
