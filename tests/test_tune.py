"""`tune`: a two-objective Optuna study over SpecDef's hyper-parameters against a red-team subset."""

import json

import pytest

from trainlock.red_team import RunnerConfig

pytest.importorskip("optuna")

from trainlock.cli.main import main
from trainlock.io.artifacts import load, save
from trainlock.tune import TuneConfig, tune
from trainlock.tune.study import _choose, _pareto


def test_pareto_and_choice():
    trials = [
        {"number": 0, "utility": 0.9, "uplift": 0.3},
        {"number": 1, "utility": 0.8, "uplift": 0.1},
        {"number": 2, "utility": 0.7, "uplift": 0.2},
        {"number": 3, "utility": 0.95, "uplift": 0.4},
    ]
    front = _pareto(trials)
    assert {t["number"] for t in front} == {0, 1, 3}  # 2 is beaten by 1 on both
    assert _choose(front, base_utility=0.95, floor=0.06)["number"] == 0  # least uplift within 6 points of base
    assert _choose(front, base_utility=0.99, floor=0.01)["number"] == 3  # none that useful: the most useful


def test_common_reference_scores_every_trial_against_the_best_reference():
    from trainlock.tune import common_reference

    trials = [
        {"number": 0, "utility": 0.97, "uplift": 0.02, "worst": 0.84, "reference": 0.82},
        {"number": 1, "utility": 0.97, "uplift": 0.01, "worst": 0.85, "reference": 0.84},
    ]
    # by its own reference, trial 1 looks better (+1 vs +2 points); its worst case is worse: it only drew a
    # stronger reference run, which an attacker on trial 0's model can use too
    assert _choose(_pareto([dict(t) for t in trials]), 0.97, 0.01)["number"] == 1
    scored = common_reference([dict(t) for t in trials])
    assert [round(t["uplift"], 6) for t in scored] == [0.0, 0.01]
    assert [t["uplift_own"] for t in scored] == [0.02, 0.01]
    assert _choose(_pareto(scored), 0.97, 0.01)["number"] == 0
    assert common_reference([dict(t) for t in scored]) == scored  # idempotent


def test_tune_writes_front_chosen_lock_and_resumes(tiny_base, digits, digits_permuted, tmp_path):
    cfg = TuneConfig(trials=2, budget=6, steps=5, batch_size=32, runner=RunnerConfig(workers=0), optimizers=("adam",))
    res = tune(tiny_base, digits, digits_permuted, cfg, out=tmp_path, report_tasks=("mnist",))
    assert len(res["trials"]) == 2 and res["pareto"] and res["chosen"]
    for t in res["trials"]:
        assert 0.0 <= t["utility"] <= 1.0 and -1.0 <= t["uplift"] <= 1.0
        assert t["reference"] >= t["scratch"]  # the best of the scratch twins and the classical reference
        assert t["uplift_own"] == pytest.approx(t["worst"] - t["reference"])
        assert t["uplift"] == pytest.approx(t["worst"] - res["reference_best"])  # one baseline for the study
        assert "alpha" in t["params"] and t["lock_config"]["alpha"] == pytest.approx(t["params"]["alpha"])
    assert res["reference_best"] == max(t["reference"] for t in res["trials"])
    saved = json.loads((tmp_path / "pareto.json").read_text())
    assert saved["tuning_task"] == digits_permuted.name and saved["report_tasks"] == ["mnist"]
    _model, meta = load(tmp_path / "chosen" / "model")
    assert meta["locks"][0]["type"] == "specdef" and (tmp_path / "chosen" / "redteam" / "report.md").is_file()
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    again = tune(tiny_base, digits, digits_permuted, cfg, out=tmp_path)  # resumed: no new trial
    assert [t["number"] for t in again["trials"]] == [0, 1]


def test_tuning_on_a_report_task_is_refused(tiny_base, digits, digits_permuted, tmp_path):
    with pytest.raises(ValueError, match="report task"):
        tune(
            tiny_base, digits, digits_permuted, TuneConfig(trials=1), out=tmp_path, report_tasks=(digits_permuted.name,)
        )


def test_cli_tune(tiny_base, digits_permuted, tmp_path, capsys):
    import numpy as np

    save(tiny_base, tmp_path / "base", {"task": "digits"})
    p = digits_permuted
    np.savez(
        tmp_path / "perm.npz",
        x_train=p.x_train.numpy(),
        y_train=p.y_train.numpy(),
        x_test=p.x_test.numpy(),
        y_test=p.y_test.numpy(),
    )
    argv = [
        "tune",
        str(tmp_path / "base"),
        "--attack-task",
        f"npz:{tmp_path / 'perm.npz'}",
        "--trials",
        "1",
        "--budget",
        "6",
        "--steps",
        "3",
        "--batch-size",
        "32",
        "--workers",
        "0",
        "--optimizers",
        "adam",
        "--out",
        str(tmp_path / "t"),
        "--json",
        str(tmp_path / "t.json"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "<- chosen" in out and "base utility on digits" in out
    assert json.loads((tmp_path / "t.json").read_text())["chosen"]["number"] == 0


@pytest.mark.parametrize("name", __import__("trainlock.tune.spaces", fromlist=["SPACES"]).SPACES.names())
def test_every_space_draws_valid_configs(name, tiny_base, digits_permuted):
    import optuna

    from trainlock.locks import LOCKS
    from trainlock.tune.spaces import SPACES

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(6):
        trial = study.ask()
        cfg = SPACES.get(name)(trial, tiny_base, digits_permuted)
        lk = LOCKS.get(name)(cfg)  # the config validates in __post_init__; the lock takes it
        assert lk.config() and trial.params
        if hasattr(cfg, "restricted"):  # restricted-domain locks train against the tuning task, and only it
            assert cfg.restricted == digits_permuted.name


def test_tune_a_restricted_domain_lock(tiny_base, digits, digits_permuted, tmp_path):
    cfg = TuneConfig(
        lock="immunize",
        trials=1,
        budget=4,
        steps=3,
        batch_size=32,
        runner=RunnerConfig(workers=0),
        optimizers=("adam",),
    )
    res = tune(tiny_base, digits, digits_permuted, cfg, out=tmp_path)
    (t,) = res["trials"]
    assert t["lock_config"]["restricted"] == digits_permuted.name and "lam_ill" in t["params"]
    _, meta = load(tmp_path / "chosen" / "model")
    assert meta["locks"][0]["type"] == "immunize"
