"""The red team on a Hugging Face transformer (tiny random BERT): optimizers over an LR grid with the text
setting's linear schedule, transforms that apply, and transforms that say why they do not."""

import pytest

from trainlock.red_team import RunnerConfig

pytest.importorskip("transformers")

import trainlock as tl
from hf_tiny import tiny, toy_task
from trainlock.red_team import RedTeamConfig, redteam
from trainlock.train import LoopConfig


def test_redteam_runs_on_a_transformer(tmp_path):
    model = tiny("bert", init=0.3)
    task = toy_task(120)
    cfg = RedTeamConfig(
        loop=LoopConfig(max_steps=4, batch_size=16, schedule="linear", device="cpu"),
        runner=RunnerConfig(workers=0),
        optimizers=("adamw", "sgd"),
        lrs=(1e-4, 1e-2),
        transforms=("merge", "rescale", "sv-clip"),
    )
    res = redteam(model, task, cfg, out=tmp_path / "rt", retain=task)
    rows = res["runs"]
    assert rows and not [r for r in rows if r.get("error")], [r.get("error") for r in rows]
    by = {r["attack"]: r for r in rows}
    assert {"adamw@0.0001", "adamw@0.01", "sgd@0.0001", "sgd@0.01"} <= set(by)
    (backdoor,) = [r for r in rows if r["attack"].endswith("[backdoor]")]  # the prefix trigger, on the text
    assert backdoor["skipped"] is None and 0.0 <= backdoor["backdoor_after"]["asr"] <= 1.0
    assert all(r["config"]["finetune"]["loop"]["schedule"] == "linear" for r in rows)
    rescale = [r for r in rows if r["attack"].startswith("rescale+")]
    assert rescale and all("positively homogeneous" in r["skipped"] for r in rescale)  # GELU: says why not
    merged = next(r for r in rows if r["attack"].startswith("merge+"))
    assert merged["skipped"] is None and "balanced" in " ".join(merged["notes"])
    assert merged["authorized_after_transform"] == pytest.approx(tl.evaluate(model, task), abs=1e-9)
    assert res["worst"]["accuracy"] == max(r["accuracy"] for r in rows if r.get("accuracy") is not None)
    assert (tmp_path / "rt" / "report.md").is_file()


def test_text_backdoor_is_calibrated_on_the_base_and_needs_the_text(tmp_path):
    """With the base, the prefix trigger is calibrated on it (the tiny tokenizer reads the trigger as its one
    [UNK] token, so the base learns it); given tokens only, the backdoor run is skipped and says why."""
    from trainlock.red_team import AttackSpec, Target, run_spec

    model, task = tiny("bert", init=0.3), toy_task(120)
    cfg = RedTeamConfig(
        loop=LoopConfig(max_steps=30, batch_size=16, device="cpu"),
        runner=RunnerConfig(workers=0),
        include=("[backdoor]",),
        optimizers=("adamw",),
        lrs=(1e-2,),
    )
    res = redteam(model, task, cfg, out=tmp_path / "bd", base=model)
    cal = res["backdoor_calibration"]
    assert cal["calibrated"] and cal["asr_base"] >= 0.9
    row, _twin = res["runs"]
    assert row["skipped"] is None and row["backdoor_after"]["asr"] == pytest.approx(cal["asr_base"], abs=0.2)
    tokens = tl.tasks.for_model(task, model)
    skipped = run_spec(Target(model, tokens), AttackSpec.of("adamw", 1e-2, max_steps=2, batch_size=16, data="backdoor"))
    assert "before tokenization" in skipped.skipped and skipped.accuracy is None
