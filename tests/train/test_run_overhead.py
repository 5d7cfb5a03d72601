"""What a run costs beyond its steps: a Ray worker fetches the target once for all its runs; the authorized accuracy
of identical start weights is measured once; runs from scratch are shared across models of one architecture, a
distilled student (which learns the released model's outputs) is not."""

import copy

import torch

from trainlock.attacks.stages import transforms as transforms_stage
from trainlock.red_team import Target, backends, run_suite, runner
from trainlock.red_team.spec import AttackSpec
from trainlock.train import accuracy


def test_a_ray_worker_fetches_the_target_once_per_sweep(monkeypatch):
    fetched, ran = [], []

    class Ref:
        def __init__(self, key):
            self.key = key

        def hex(self):
            return self.key

    class FakeRay:
        @staticmethod
        def get(ref):
            fetched.append(ref.key)
            return f"target {ref.key}"

    monkeypatch.setattr(backends, "_ray", lambda: FakeRay)
    monkeypatch.setattr(runner, "_worker", lambda spec: ran.append((runner._STATE["target"], spec)) or {})
    monkeypatch.setattr(backends, "_LOADED", {})
    a, b = Ref("a" * 8), Ref("b" * 8)
    for spec in ("s1", "s2", "s3"):
        backends._ray_run([a], spec)
    backends._ray_run([b], "s4")  # another sweep's target replaces it
    backends._ray_run([b], "s5")
    assert fetched == ["a" * 8, "b" * 8]
    ta, tb = "target " + "a" * 8, "target " + "b" * 8
    assert ran == [(ta, "s1"), (ta, "s2"), (ta, "s3"), (tb, "s4"), (tb, "s5")]


def test_the_start_weights_authorized_accuracy_is_measured_once(tiny_base, digits, digits_permuted, monkeypatch):
    monkeypatch.setattr(transforms_stage, "_START", {})
    specs = [AttackSpec.of(o, lr, max_steps=3, batch_size=32) for o in ("adam", "sgd") for lr in (1e-3, 1e-2)]
    specs += [AttackSpec.of("adam", 1e-3, max_steps=3, batch_size=32, start="scratch")]
    rows = run_suite(Target(tiny_base, digits_permuted, digits), specs, workers=0, progress=False)
    assert len(transforms_stage._START) == 1  # the released weights; the scratch run is not measured at all
    released = accuracy(tiny_base, digits.x_test, digits.y_test)
    assert [r["authorized_after_transform"] for r in rows[:4]] == [released] * 4
    assert all(r["authorized_after_attack"] is not None for r in rows[:4])
    scratch = rows[4]
    assert scratch["attack"].startswith("scratch")  # random weights: no authorized accuracy to report
    assert "authorized_after_transform" not in scratch and "authorized_after_attack" not in scratch


def test_scratch_runs_are_shared_across_models_of_one_architecture_distilled_ones_are_not(
    tiny_base, digits, digits_permuted, monkeypatch
):
    other = copy.deepcopy(tiny_base)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5 * torch.randn_like(p))
    specs = [
        AttackSpec.of("adam", 1e-3, max_steps=3, batch_size=32, start="scratch"),
        AttackSpec.of("adam", 1e-3, max_steps=3, batch_size=32, start="distill", options={"distill": {"steps": 3}}),
    ]
    ran = []
    worker = runner._worker
    monkeypatch.setattr(runner, "_worker", lambda spec: ran.append(spec.start) or worker(spec))
    first = run_suite(Target(tiny_base, digits_permuted, digits), specs, workers=0, progress=False)
    second = run_suite(Target(other, digits_permuted, digits), specs, workers=0, progress=False)
    assert ran == ["scratch", "distill", "distill"]  # the scratch run reused, the student distilled again
    assert second[0] == first[0]
