import json
import random

import pytest

import trainlock as tl
from trainlock.attacks.transforms import TRANSFORMS, TransformNotApplicable, TransformOutcome
from trainlock.cli.main import main
from trainlock.locks import specdef_loop
from trainlock.red_team import (
    AttackSpec,
    RedTeamConfig,
    RunnerConfig,
    Target,
    build_suite,
    read_rows,
    redteam,
    run_spec,
    run_suite,
    runner,
    worst_case,
)
from trainlock.red_team.report import adaptive_vs_plain, write_report
from trainlock.train import LoopConfig


@pytest.fixture(scope="module")
def locked(tiny_base, digits):
    return tl.lock(
        tiny_base, tl.SpecDefConfig(loop=specdef_loop(lr=10.0, epochs=5, batch_size=32, device="cpu")), digits
    ).model


def test_suite_priority_budget_and_include():
    suite = build_suite(RedTeamConfig())
    assert [s.name for s in suite[:12]] == [  # each attack right before its matched run from scratch
        f"{init}{o}@{lr:g}" for o in ("adam", "sgd") for lr in (1e-4, 1e-3, 1e-2) for init in ("", "scratch:")
    ]
    assert len({s.key() for s in suite}) == len(suite)
    # a budget that cuts a pair keeps it matched: the attack's scratch twin comes too
    assert [s.name for s in build_suite(RedTeamConfig(budget=3))] == [s.name for s in suite[:4]]
    # every attack in the suite has its scratch twin (same optimizer, rate, schedule, steps, seed)
    scratch = {
        (s.finetune.loop.optimizer, s.finetune.loop.lr, s.finetune.loop.schedule, s.finetune.loop.max_steps)
        for s in suite
        if s.start == "scratch"
    }
    for s in suite:
        loop = s.finetune.loop
        assert (loop.optimizer, loop.lr, loop.schedule, loop.max_steps) in scratch, s.name
    only = build_suite(RedTeamConfig(include=("sgd@",)))
    assert only and all("sgd@" in s.name for s in only)
    # every registered optimizer and transform appears in the full suite
    names = " ".join(s.name for s in suite)
    from trainlock.optimizers import OPTIMIZERS

    for opt in OPTIMIZERS.names():
        assert f"{opt}@" in names
    for t in TRANSFORMS.names():
        assert f"{t}+" in names or f"{t}(" in names
    assert "distill:" in names and "sv-clip(use_record=True)" in names
    insider = [s for s in suite if s.insider]
    assert [s.name.split("+")[0] for s in insider] == ["sv-clip(use_record=True)"]


def test_spec_round_trip_and_stable_key():
    s = AttackSpec.of("sgd", 0.1, transforms=(("rescale", {"mode": "scalar"}),), head="reset")
    back = AttackSpec.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s and back.key() == s.key()
    assert s.name == "rescale(mode=scalar)+sgd@0.1[head=reset]"
    with pytest.raises(ValueError, match="data"):
        AttackSpec(data="poison")
    with pytest.raises(ValueError, match="unknown field"):
        AttackSpec.from_dict({"optimiser": "sgd"})
    assert AttackSpec.from_dict(s.to_dict()) == s and s.to_dict()["finetune"]["loop"]["optimizer"] == "sgd"


def _row(key, acc, steps=None, adaptive=False):
    return {
        "key": key,
        "attack": key,
        "config": {"target_accuracy": 0.7},
        "accuracy": acc,
        "steps_to_target": steps,
        "adaptive": adaptive,
        "diverged": None,
    }


def test_worst_case_is_order_independent():
    rows = [
        _row("a", 0.5),
        _row("b", 0.8, 40),
        _row("c", 0.8, 20, adaptive=True),
        _row("d", 0.1),
        {"key": "e", "attack": "e", "skipped": "nope"},
    ]
    for _ in range(5):
        random.shuffle(rows)
        w = worst_case(rows)
        assert w["attack"] == "c" and w["accuracy"] == 0.8 and w["steps_to_target"] == 20
    cmp_ = adaptive_vs_plain(rows)
    assert cmp_["adaptive_beats_every_plain"] and cmp_["best_plain"]["attack"] == "b"
    assert worst_case([{"key": "x", "skipped": "n/a"}]) is None


def test_worker_count_does_not_change_the_result(locked, digits, digits_permuted, tmp_path):
    specs = build_suite(RedTeamConfig(loop=LoopConfig(device="cpu", max_steps=20, batch_size=32), budget=4))
    one = run_suite(Target(locked, digits_permuted, digits), specs, None, workers=0, progress=False)
    runner._FRESH.clear()  # the scratch twins too are run again, not reused
    two = run_suite(Target(locked, digits_permuted, digits), specs, None, workers=2, progress=False)
    assert [r.get("accuracy") for r in one] == [r.get("accuracy") for r in two]
    assert worst_case(one) == worst_case(two)


def test_runs_from_scratch_are_shared_by_models_of_one_architecture(
    locked, tiny_base, digits, digits_permuted, monkeypatch
):
    specs = build_suite(RedTeamConfig(loop=LoopConfig(device="cpu", max_steps=10, batch_size=32), budget=4))
    fresh = {s.key() for s in specs if s.stages().start.fresh}
    assert fresh and len(fresh) < len(specs)
    first = run_suite(Target(locked, digits_permuted, digits), specs, None, workers=0, progress=False)
    ran = []
    real = runner.run_spec
    monkeypatch.setattr(runner, "run_spec", lambda t, s: ran.append(s.key()) or real(t, s))
    second = run_suite(Target(tiny_base, digits_permuted, digits), specs, None, workers=0, progress=False)
    assert set(ran) == {s.key() for s in specs} - fresh  # the base's scratch twins were not trained again
    reused = {r["key"]: r for r in second if r["key"] in fresh}
    assert reused == {r["key"]: r for r in first if r["key"] in fresh}
    runner._FRESH.clear()
    ran.clear()
    again = run_suite(Target(tiny_base, digits_permuted, digits), specs, None, workers=0, progress=False)
    assert set(ran) == {s.key() for s in specs}  # nothing to reuse: every run trained
    assert {r["key"]: r.get("accuracy") for r in again if r["key"] in fresh} == {
        k: r.get("accuracy") for k, r in reused.items()
    }  # what was reused is what training again gives
    wider = tl.models.build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[48])
    ran.clear()
    run_suite(Target(wider, digits_permuted, digits), specs, None, workers=0, progress=False)
    assert set(ran) == {s.key() for s in specs}  # another architecture: its own runs from scratch


def test_interrupted_sweep_resumes_without_redoing_runs(locked, digits_permuted, tmp_path):
    specs = build_suite(RedTeamConfig(loop=LoopConfig(device="cpu", max_steps=10, batch_size=32), budget=5))
    assert len(specs) == 6  # 5 and the scratch twin of the fifth
    seen = []

    def stop_after_two(row):
        seen.append(row["key"])
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_suite(Target(locked, digits_permuted), specs, tmp_path, workers=0, progress=False, on_row=stop_after_two)
    assert len(read_rows(tmp_path / "runs.jsonl")) == 2
    with open(tmp_path / "runs.jsonl", "a") as f:
        f.write('{"key": "torn')  # a line cut off by the kill
    again = []
    rows = run_suite(
        Target(locked, digits_permuted),
        specs,
        tmp_path,
        workers=0,
        progress=False,
        on_row=lambda r: again.append(r["key"]),
    )
    assert len(again) == 4 and not set(again) & set(seen)
    assert [r["key"] for r in rows] == [s.key() for s in specs]
    on_disk = read_rows(tmp_path / "runs.jsonl")  # the torn line did not swallow the row written after it
    assert sorted(r["key"] for r in on_disk) == sorted(s.key() for s in specs)


def test_diverged_skipped_and_failing_runs_are_recorded(locked, digits_permuted, tmp_path):
    class Skip:
        function_preserving = True

        def __call__(self, model, ctx):
            raise TransformNotApplicable("needs a ReLU; found tanh")

    class Boom:
        function_preserving = False

        def __call__(self, model, ctx):
            raise RuntimeError("kaboom")

    TRANSFORMS.add("test-skip", Skip)
    TRANSFORMS.add("test-boom", Boom)
    try:
        specs = [
            AttackSpec.of("sgd", 1e30, max_steps=5),
            AttackSpec.of("adam", 1e-3, transforms=(("test-skip", {}),)),
            AttackSpec.of("adam", 1e-3, transforms=(("test-boom", {}),)),
        ]
        rows = run_suite(Target(locked, digits_permuted), specs, tmp_path, workers=0, progress=False)
    finally:
        TRANSFORMS._items.pop("test-skip")
        TRANSFORMS._items.pop("test-boom")
    assert rows[0]["diverged"] and 0 <= rows[0]["accuracy"] <= 1
    assert rows[1]["skipped"] == "test-skip: needs a ReLU; found tanh" and "accuracy" not in rows[1]
    assert "kaboom" in rows[2]["error"] and "RuntimeError" in rows[2]["traceback"]
    assert read_rows(tmp_path / "runs.jsonl") == rows  # what was written reads back the same
    report = write_report(tmp_path, "t", rows).read_text()
    assert "needs a ReLU; found tanh" in report and "kaboom" in report and "Worst case: `sgd@1e+30`" in report


def test_transforms_fold_back_and_report_authorized_accuracy(locked, digits, digits_permuted):
    class Scale:
        """A toy function-preserving transform with a (trivial) fold."""

        function_preserving = True

        def __call__(self, model, ctx):
            def fold(m):
                return m

            return TransformOutcome(model, note="identity", fold=fold)

    TRANSFORMS.add("test-identity", Scale)
    try:
        spec = AttackSpec.of("sgd", 1e-2, transforms=(("test-identity", {}),), max_steps=10)
        r = run_spec(Target(locked, digits_permuted, digits), spec)
    finally:
        TRANSFORMS._items.pop("test-identity")
    assert r.adaptive and r.notes == ["test-identity: identity"]
    assert r.authorized_after_transform == pytest.approx(tl.evaluate(locked, digits))
    assert r.accuracy == pytest.approx(r.accuracy_before_fold)


def test_optuna_search_resumes(locked, digits_permuted, tmp_path):
    pytest.importorskip("optuna")
    from trainlock.red_team.search import search

    cfg = RedTeamConfig(loop=LoopConfig(device="cpu", max_steps=5, batch_size=32), search_trials=2)
    rows = search(locked, digits_permuted, cfg, tmp_path)
    assert len(rows) == 2
    cfg.search_trials = 3
    rows = search(locked, digits_permuted, cfg, tmp_path)
    assert len(rows) == 3  # two reused from the study, one new
    import optuna

    study = optuna.load_study(study_name="redteam", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.trials) == 3


def test_python_api_and_cli(locked, tiny_base, digits, digits_permuted, tmp_path, capsys):
    cfg = RedTeamConfig(
        loop=LoopConfig(device="cpu", max_steps=100, batch_size=32),
        runner=RunnerConfig(workers=0),
        budget=4,
        include=("adam@0.001", "sgd@0.01"),
    )
    res = redteam(locked, digits_permuted, cfg, out=tmp_path / "api", retain=digits, base=tiny_base)
    assert [r["attack"] for r in res["runs"]] == ["adam@0.001", "scratch:adam@0.001", "sgd@0.01", "scratch:sgd@0.01"]
    assert set(res) >= {"worst", "runs", "comparison", "base_worst", "reference", "uplift", "base_uplift", "budget"}
    # the best reference: the matched runs from scratch and the classical attacker (logistic regression on pixels)
    ref = res["reference"]
    assert ref["accuracy"] == max(r["accuracy"] for r in ref["runs"] if r["accuracy"] is not None)
    assert {r["attacker"] for r in ref["runs"]} >= {"scratch:adam@0.001", "scratch:sgd@0.01"}
    assert any(r["attacker"].startswith("classical") for r in ref["runs"])
    assert res["uplift"] == pytest.approx(res["locked"]["accuracy"] - ref["accuracy"])
    assert res["base_uplift"] == pytest.approx(res["base"]["accuracy"] - ref["accuracy"])
    assert res["budget"] == {
        "steps_per_run": cfg.loop.total_steps(len(digits_permuted.y_train)),
        "n_train": len(digits_permuted.y_train),
        "n_test": len(digits_permuted.y_test),
    }
    assert "Uplift over the best reference attacker" in (tmp_path / "api" / "report.md").read_text()
    # measured (adam 1e-3 and sgd 1e-2, 100 steps): base worst case 0.617, locked 0.333
    assert res["base_worst"]["accuracy"] > res["worst"]["accuracy"] + 0.2
    assert (tmp_path / "api" / "report.md").is_file() and (tmp_path / "api" / "lr_sweep.png").is_file()
    import numpy as np

    np.savez(
        tmp_path / "perm.npz",
        x_train=digits_permuted.x_train.numpy(),
        y_train=digits_permuted.y_train.numpy(),
        x_test=digits_permuted.x_test.numpy(),
        y_test=digits_permuted.y_test.numpy(),
    )
    tl.save(locked, tmp_path / "locked", {"task": "digits"})
    assert (
        main(
            [
                "redteam",
                str(tmp_path / "locked"),
                "--task",
                f"npz:{tmp_path / 'perm.npz'}",
                "--budget",
                "2",
                "--max-steps",
                "10",
                "--workers",
                "0",
                "--out",
                str(tmp_path / "cli"),
                "--json",
                str(tmp_path / "rt.json"),
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "rt.json").read_text())
    attacks = [r for r in data["runs"] if not r["attack"].startswith("scratch:")]  # scratch runs are references
    assert data["worst"]["accuracy"] == max(r["accuracy"] for r in attacks)
    assert data["reference"]["accuracy"] >= max(r["accuracy"] for r in data["runs"] if r not in attacks)
    assert "worst case:" in capsys.readouterr().out


def test_selection_and_lr_grid():
    suite = build_suite(RedTeamConfig(optimizers=("sgd",), transforms=(), lrs=(1e-8, 1e-5, 1e-3)))
    plain = [s.name for s in suite if not s.transforms and s.finetune.head == "auto" and s.data == "clean"]
    assert plain == [
        "sgd@1e-08",
        "scratch:sgd@1e-08",
        "sgd@1e-05",
        "scratch:sgd@1e-05",
        "sgd@0.001",
        "scratch:sgd@0.001",
        "sgd@1e-05[probe]",  # logistic regression on the frozen features, and its twin probing fresh ones
        "scratch:sgd@1e-05[probe]",
        "distill:sgd@1e-05",
        "sgd@1e-05[lora]",  # rank-8 adapters at the best rate and at 10x it, each with its twin
        "scratch:sgd@1e-05[lora]",
        "sgd@0.0001[lora]",
        "scratch:sgd@0.0001[lora]",
    ]  # before any result: the grid middle
    from trainlock.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match=r"valid: .*adam"):
        build_suite(RedTeamConfig(optimizers=("adamm",)))
    with pytest.raises(UnknownNameError, match=r"valid: .*rescale"):
        build_suite(RedTeamConfig(transforms=("rescal",)))
    with pytest.raises(ValueError, match="lrs must be a finite number > 0"):
        build_suite(RedTeamConfig(lrs=(0.0,)))


def test_backdoor_run_reports_asr_before_and_after(tiny_base, digits, tmp_path):
    spec = AttackSpec.of("adam", 1e-2, epochs=2, batch_size=32, data="backdoor")
    row = run_spec(Target(tiny_base, digits, digits), spec)
    assert set(row.backdoor_after) == {"clean_accuracy", "clean_f1", "asr"}
    # measured on the unlocked base: ASR 0.00 -> ~0.8 after two poisoned epochs
    assert row.backdoor_before["asr"] < 0.1 and row.backdoor_after["asr"] > 0.5
    report = write_report(tmp_path, "t", [row.to_dict()]).read_text()
    assert "Backdoor injection" in report


def test_recorded_locks_are_monitored_and_recertified(tiny_base, digits, digits_permuted, tmp_path):
    lock = tl.locks.lock_factory({"type": "spectral-cap", "max_sigma": 1.0})
    res = tl.lock(tiny_base, lock, digits)
    locked, record = res.model, res.record
    tl.save(locked, tmp_path / "m", record)
    locked, meta = tl.load(tmp_path / "m")  # as an adversary gets it: weights, no training-time hooks
    specs = [
        AttackSpec.of("sgd", 1.0, max_steps=20, eval_every=5),
        AttackSpec.of("sgd", 1e-2, max_steps=5, transforms=(("sv-clip", {}),)),
    ]
    rows = run_suite(Target(locked, digits_permuted, digits, meta["locks"]), specs, tmp_path, workers=0, progress=False)
    plain, clipped = rows
    key = next(iter(plain["certificates_after"]))
    # the cap is not enforced in a reloaded/attacked model: a big-lr attack breaks it, found at a check step
    assert plain["certificates_after"][key] is False and plain["lock_first_broken"][key] in (5, 10, 15, 20)
    assert clipped.get("lock_first_broken") is None and key in clipped["certificates_after"]
    assert "certificates after each attack" in write_report(tmp_path, "t", rows).read_text()


def test_spec_keys_of_older_results_still_match():
    """Version-1 keys written by 0.2.0 before `schedule` existed are recognized (a results directory must still
    resume; the rows are re-keyed on read, see tests/attacks/test_stages.py)."""
    assert AttackSpec().legacy_key() == "6ad829af3d3530b4"
    assert AttackSpec.of("sgd", 1e-2, transforms=(("merge", {}),), max_steps=30).legacy_key() == "9624e4a6ad8dba78"
    linear = AttackSpec.of(schedule="linear")
    assert linear.key() != AttackSpec().key() and linear.legacy_key() != AttackSpec().legacy_key()
    assert linear.finetune_config().loop.schedule == "linear"
    assert AttackSpec.of(warmup_steps=5).legacy_key() is None  # version 1 had no such field
    assert AttackSpec().key() != AttackSpec().legacy_key()  # version 2: the nested dict with its marker


def test_later_stages_follow_the_results_of_earlier_ones():
    from trainlock.red_team import plan

    cfg = RedTeamConfig(optimizers=("adam", "sgd", "rmsprop"), transforms=("merge",), loop=LoopConfig(max_steps=40))
    first = plan(cfg, [], steps_per_run=40)
    probes = [s for st, s in first if st == "probes" and s.start != "scratch"]
    assert [s.name for s in probes] == ["rmsprop@0.0001", "rmsprop@0.001"] and {s.loop.max_steps for s in probes} == {
        10
    }
    rows = [{"key": s.key(), "accuracy": 0.9 if s.name == "rmsprop@0.001" else 0.1} for s in probes]
    rows += [
        {"key": s.key(), "accuracy": 0.5 if s.name == "sgd@0.0001" else 0.2} for st, s in first if st == "coverage"
    ]
    again = plan(cfg, rows, steps_per_run=40)
    full = [s for st, s in again if st == "full"]
    assert [(s.name, s.loop.max_steps) for s in full] == [("rmsprop@0.001", 40), ("scratch:rmsprop@0.001", 40)]
    adaptive = [s.name for st, s in again if st == "adaptive"]
    assert adaptive[:2] == ["merge+sgd@0.0001", "merge+adam@0.0001"]  # the two best plain runs so far


def test_worst_case_covers_the_core_grid_and_scratch_whatever_the_budget(tiny_base, locked, digits_permuted):
    """With a budget >= 20 the worst case is at least the best of {adam, sgd} x {1e-4, 1e-3, 1e-2} on the
    released weights, and the reference at least the best of them from scratch, each run separately."""
    from trainlock.attacks.scratch import scratch_baseline

    task = digits_permuted.subset(n_train=256, n_test=200, seed=0)
    loop = LoopConfig(max_steps=15, batch_size=32, device="cpu")
    res = redteam(locked, task, RedTeamConfig(loop=loop, budget=20, runner=RunnerConfig(workers=0)))
    assert len(res["runs"]) == 20
    best, best_scratch = 0.0, 0.0
    for opt in ("adam", "sgd"):
        for lr in (1e-4, 1e-3, 1e-2):
            ft = tl.FineTuneConfig(loop=LoopConfig(optimizer=opt, lr=lr, max_steps=15, batch_size=32, device="cpu"))
            best = max(best, tl.attack(locked, ft, task).accuracy)
            best_scratch = max(best_scratch, scratch_baseline(locked, ft, task).accuracy)
    assert res["worst"]["accuracy"] >= best - 1e-9
    assert res["scratch"]["accuracy"] >= best_scratch - 1e-9
    assert res["reference"]["accuracy"] >= res["scratch"]["accuracy"]
    assert res["uplift"] == pytest.approx(res["locked"]["accuracy"] - res["reference"]["accuracy"])
    assert "advantage" not in res  # renamed: scratch is one reference among others


def test_no_backdoor_calibration_when_the_budget_cuts_the_backdoor(locked, tiny_base, digits_permuted, monkeypatch):
    from trainlock.attacks import backdoor

    monkeypatch.setattr(backdoor, "calibrate", lambda *a, **k: pytest.fail("calibrated a backdoor that never runs"))
    cfg = RedTeamConfig(
        loop=LoopConfig(max_steps=5, batch_size=32, device="cpu"),
        runner=RunnerConfig(workers=0),
        optimizers=("adam",),
        lrs=(1e-2,),
        budget=3,
    )
    res = redteam(locked, digits_permuted, cfg, base=tiny_base)
    assert "backdoor_calibration" not in res and not any("backdoor" in r["attack"] for r in res["runs"])


def test_backdoor_row_uses_the_setting_calibrated_on_the_base(locked, tiny_base, digits_permuted, tmp_path):
    cfg = RedTeamConfig(
        loop=LoopConfig(max_steps=45, batch_size=32, device="cpu"),
        runner=RunnerConfig(workers=0),
        include=("[backdoor]",),
        optimizers=("adam",),
        lrs=(1e-2,),
    )
    res = redteam(locked, digits_permuted, cfg, out=tmp_path / "bd", base=tiny_base)
    cal = res["backdoor_calibration"]
    assert cal["calibrated"] and cal["asr_base"] >= 0.9
    row, twin = res["runs"]
    assert twin["attack"] == "scratch:adam@0.01"
    spec = AttackSpec.from_dict(row["config"])
    assert spec.stages().data.poison_fraction == cal["poison_fraction"] and spec.loop.max_steps == cal["max_steps"]
    assert "Calibrated on the unlocked base" in (tmp_path / "bd" / "report.md").read_text()


def test_search_curve_for_locked_and_base(locked, tiny_base, digits_permuted, tmp_path):
    pytest.importorskip("optuna")
    from trainlock.red_team.report import best_so_far

    cfg = RedTeamConfig(
        loop=LoopConfig(max_steps=5, batch_size=32, device="cpu"),
        runner=RunnerConfig(workers=0),
        budget=1,
        search_trials=3,
    )
    res = redteam(locked, digits_permuted, cfg, out=tmp_path / "s", base=tiny_base)
    curve = best_so_far(res["runs"])
    assert len(curve) == 3 and curve == sorted(curve)
    assert (tmp_path / "s" / "search.png").is_file() and "best accuracy so far" in (
        tmp_path / "s" / "report.md"
    ).read_text()


def test_cli_lrs_are_numbers():
    from trainlock.cli.common import config_from_args
    from trainlock.cli.main import build_parser

    args = build_parser(["redteam"]).parse_args(
        ["redteam", "m", "--task", "t", "--lrs", "5e-5", "1e-3", "--optimizers", "adamw", "sgd"]
    )
    cfg = config_from_args(RedTeamConfig, args)
    assert cfg.lrs == (5e-5, 1e-3) and cfg.optimizers == ("adamw", "sgd")


def test_headline_leaves_insider_runs_out_of_the_attackers_best():
    from trainlock.red_team.report import headline

    def row(key, acc, init="released", insider=False, steps=None):
        return {
            "key": key,
            "attack": key,
            "accuracy": acc,
            "steps_to_target": steps,
            "insider": insider,
            "config": {"start": init},
        }

    rows = [row("a", 0.8, steps=40), row("b", 0.9, insider=True, steps=10), row("s", 0.3, init="scratch")]
    base = [row("a", 0.95, steps=20)]
    h = headline(rows, base)
    assert h["locked"]["attack"] == "a" and h["worst"]["attack"] == "b"
    assert h["scratch_uplift"] == pytest.approx(0.5) and h["base_scratch_uplift"] == pytest.approx(0.65)
    assert h["compute_ratio_vs_base"] == pytest.approx(2.0) and h["compute_ratio_vs_scratch"] is None


def test_transforms_that_read_activations_use_the_attackers_inputs_without_a_retain_task(locked, digits_permuted):
    spec = AttackSpec.of("adam", 1e-3, transforms=(("temperature-reset", {}),), max_steps=3, batch_size=32)
    (row,) = run_suite(Target(locked, digits_permuted), [spec], None, workers=0, progress=False)
    assert row["skipped"] is None and "accuracy" in row, row.get("skipped")
    assert "temperature-reset" in row["notes"][0]


def test_tl_redteam_is_the_function_and_the_package_still_imports():
    """`import trainlock as tl; tl.redteam(...)` calls the function (trainlock/__init__ maps the name to
    redteam.core); the package's names import as before."""
    import os
    import subprocess
    import sys

    code = (
        "import inspect\nimport trainlock as tl\nassert inspect.isfunction(tl.redteam), tl.redteam\n"
        "from trainlock.red_team import AttackSpec, RedTeamConfig, RunRow, read_rows, redteam, run_spec\n"
        "assert tl.redteam is redteam and tl.RedTeamConfig is RedTeamConfig\n"
        "from trainlock.red_team import core\nassert core.redteam is redteam\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)


def test_redteam_takes_the_lock_summary_and_the_locks_from_meta(tiny_base, digits_permuted, tmp_path):
    layers = {name: [0.5] for name, p in tiny_base.named_parameters() if p.dim() == 2}
    cfg = RedTeamConfig(
        loop=LoopConfig(device="cpu", max_steps=2, batch_size=32),
        runner=RunnerConfig(workers=0),
        optimizers=("adam",),
        transforms=("sv-clip",),
        lrs=(1e-3,),
        include=("use_record",),
    )
    res = redteam(tiny_base, digits_permuted, cfg, meta={"lock": {"sigma_before": {"layers": layers}}, "locks": []})
    row, _twin = res["runs"]
    assert row["insider"] and "recorded pre-lock sigma_max" in row["notes"][0]


def test_references_train_beside_the_suite_or_the_base_and_match_in_process(
    locked, tiny_base, digits_permuted, tmp_path, monkeypatch
):
    """The references run in a side process (`beside`) while the locked model's suite goes where it leaves a core
    idle, else while the base's pool goes, and are read back from references.json: the same numbers as computed in
    this process (no spare core, no pool)."""
    from trainlock.red_team import core, uplift

    calls = []
    real = core.beside

    def spy(fn, *args):
        calls.append(fn.__name__)
        return real(fn, *args)

    monkeypatch.setattr(core, "beside", spy)
    results, seen = {}, {}
    for name, workers, spare in (("pool", 2, False), ("spare", 0, True), ("here", 0, False)):
        monkeypatch.setattr(uplift, "_MEMO", {})  # each computes its references (not another test's, not the other's)
        monkeypatch.setattr(core, "_spare_core", lambda cfg, spare=spare: spare)
        cfg = RedTeamConfig(
            loop=LoopConfig(device="cpu", max_steps=20, batch_size=32),
            runner=RunnerConfig(workers=workers),
            budget=2,
            include=("adam@0.001",),
        )
        calls.clear()
        results[name] = redteam(locked, digits_permuted, cfg, out=tmp_path / name, base=tiny_base)
        seen[name] = list(calls)
        assert (tmp_path / name / "references.json").is_file()
    assert seen == {"pool": ["reference_runs"], "spare": ["reference_runs"], "here": []}
    refs = {w: {r["attacker"]: r["accuracy"] for r in res["reference"]["runs"]} for w, res in results.items()}
    assert any(a.startswith("classical") for a in refs["here"]) and refs["pool"] == refs["spare"] == refs["here"]


def test_a_spare_core_is_one_the_suite_leaves_idle(monkeypatch):
    from trainlock.red_team import core

    monkeypatch.setattr(core.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    cfg = RedTeamConfig(runner=RunnerConfig(workers=0))
    monkeypatch.setattr(core.torch, "get_num_threads", lambda: 1)
    assert core._spare_core(cfg)
    monkeypatch.setattr(core.torch, "get_num_threads", lambda: 2)
    assert not core._spare_core(cfg)
    assert core._spare_core(RedTeamConfig(runner=RunnerConfig(workers=1)))
    assert not core._spare_core(RedTeamConfig(runner=RunnerConfig(workers=2)))
