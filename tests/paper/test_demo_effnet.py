"""The EfficientNet demo end to end: the real architecture, randomly initialized at 32 px, on small digits-based
stand-ins for CIFAR-10 vehicles (3 channels) and a held-back task (1 channel); the real one needs the weights and minutes."""

import dataclasses
import json

import pytest

import trainlock as tl
from trainlock.cli.main import main
from trainlock.paper import demo_effnet


@pytest.fixture
def small_tasks(monkeypatch, digits):
    small = digits.subset(120, 60)
    rgb = dataclasses.replace(
        small,
        name="cifar10-vehicles",
        x_train=small.x_train.expand(-1, 3, -1, -1).contiguous(),
        x_test=small.x_test.expand(-1, 3, -1, -1).contiguous(),
    )
    other = dataclasses.replace(tl.tasks.permuted(small, seed=1), name="cifar10-animals")
    monkeypatch.setattr(tl.tasks, "get", lambda name: rgb if name == "cifar10-vehicles" else other)


def test_effnet_demo_prints_locked_base_reference_and_uplifts(monkeypatch, small_tasks, tmp_path, capsys):
    real = tl.models.build
    monkeypatch.setattr(tl.models, "build", lambda name, **kw: real(name, **{**kw, "pretrained": False}))
    monkeypatch.setattr(
        demo_effnet,
        "vision_plan",
        lambda quick, full=False: demo_effnet.VisionPlan(
            size=32,
            n_train=100,
            n_attack=80,
            n_test=40,
            batch_size=16,
            train_steps=3,
            lock_steps=2,
            attack_steps=3,
            lrs=(1e-3,),
            held_back=("cifar10-animals",),
            workers=0,
            sv_clip=True,
        ),
    )
    assert main(["demo", "--quick", "--out", str(tmp_path), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert (
        "best reference attacker" in text and "uplift without a lock" in text and "held back: cifar10-animals" in text
    )
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["model"] == "effnet-lite0" and res["authorized"]["task"] == "cifar10-vehicles"
    (u,) = res["held_back"]
    rt = json.loads((tmp_path / "redteam" / "cifar10-animals" / "summary.json").read_text())
    assert u["reference"]["accuracy"] == rt["reference"]["accuracy"]
    assert u["uplift"] == pytest.approx(u["locked"]["accuracy"] - u["reference"]["accuracy"])
    assert u["base_uplift"] == pytest.approx(u["base"]["accuracy"] - u["reference"]["accuracy"])
    assert u["budget"] == {"steps_per_run": 3, "n_train": 80, "n_test": 40}
    rows = [json.loads(line) for line in (tmp_path / "redteam" / "cifar10-animals" / "runs.jsonl").open()]
    names = {r["attack"] for r in rows}
    assert {"adam@0.001", "scratch:adam@0.001", "adam@0.001[probe]"} <= names  # the probe is never cut
    assert any("sv-clip" in n for n in names)
    assert (tmp_path / "locked" / "trainlock.json").is_file() and (tmp_path / "base" / "trainlock.json").is_file()
    assert set(res["stages"]) == {"train_s", "lock_s", "redteam_cifar10-animals_s"}


def test_the_default_demo_cuts_the_runs_the_full_one_never_needed():
    default, full = demo_effnet.vision_plan(False), demo_effnet.vision_plan(False, full=True)
    quick = demo_effnet.vision_plan(True)
    assert default.lrs == (1e-3,) and not default.sv_clip and not quick.sv_clip
    assert (
        full.lrs == (1e-4, 1e-3) and full.sv_clip and dataclasses.replace(full, lrs=(1e-3,), sv_clip=False) == default
    )
    # each rate and the probe with their scratch twins; the full plan adds sv-clip before the two Adam runs
    assert demo_effnet._redteam_config(default, "cpu").budget == 4
    assert demo_effnet._redteam_config(full, "cpu").budget == 8
