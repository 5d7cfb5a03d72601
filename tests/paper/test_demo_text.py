"""The text demo end to end on a tiny BERT and toy tasks (the real one needs MiniLM and minutes)."""

import json

import pytest

pytest.importorskip("transformers")

import trainlock as tl
from hf_tiny import tiny, toy_task
from trainlock.cli.main import main
from trainlock.paper import demo_text


def test_text_demo_prints_locked_base_reference_and_uplifts(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(tl.models, "build", lambda name, **kw: tiny("bert"))
    monkeypatch.setattr(tl.tasks, "get", lambda name: toy_task(120))
    monkeypatch.setattr(
        demo_text,
        "text_plan",
        lambda quick: demo_text.TextPlan(
            n_train=80,
            n_test=40,
            max_length=8,
            batch_size=16,
            train_steps=5,
            lock_steps=3,
            attack_steps=4,
            lrs=(1e-3,),
            budget=3,
            workers=0,
        ),
    )
    assert main(["demo", "--text", "--quick", "--out", str(tmp_path), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "from scratch" in text and "best reference attacker" in text and "uplift without a lock" in text
    res = json.loads((tmp_path / "results.json").read_text())
    u = res["unauthorized"]
    assert u["reference"]["accuracy"] >= u["scratch"]["accuracy"]
    assert u["uplift"] == pytest.approx(u["locked"]["accuracy"] - u["reference"]["accuracy"])
    assert u["base_uplift"] == pytest.approx(u["base"]["accuracy"] - u["reference"]["accuracy"])
    assert (tmp_path / "redteam" / "report.md").is_file() and (tmp_path / "locked" / "trainlock.json").is_file()
