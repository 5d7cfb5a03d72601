"""The honest lock table: every lock through one red-team subset, worst case (largest uplift) first."""

import json

from trainlock.cli.main import main
from trainlock.io.artifacts import save
from trainlock.red_team import RunnerConfig
from trainlock.tune.table import TableConfig, _bypass_steps, format_table, lock_table


def test_bypass_steps_reads_the_first_eval_at_level():
    rows = [
        {"config": {"init": "released"}, "evals": [[0, 0.1], [50, 0.6], [100, 0.8]]},
        {"config": {"init": "released"}, "evals": [[0, 0.1], [25, 0.75]], "distill": {"steps": 10}},
        {"config": {"init": "scratch"}, "evals": [[5, 0.9]]},  # scratch runs do not bypass the lock
        {"config": {"init": "released"}, "insider": True, "evals": [[1, 0.9]]},
    ]  # nor insiders
    assert _bypass_steps(rows, 0.7) == 35
    assert _bypass_steps(rows, 0.95) is None
    # a run that reaches the level only at its end (after the last periodic evaluation) counts at its last step
    late = [{"config": {"init": "released"}, "evals": [[0, 0.1]], "accuracy": 0.96, "steps": 40}]
    assert _bypass_steps(rows + late, 0.95) == 40


def test_lock_table_rows_and_cli(tiny_base, digits, digits_permuted, tmp_path, capsys):
    specs = {
        "none": None,
        "specdef": {
            "type": "specdef",
            "alpha": 0.5,
            "loop": {"optimizer": "adadelta", "lr": 1.0, "epochs": 1, "batch_size": 32, "device": "cpu"},
        },
    }
    cfg = TableConfig(budget=6, steps=5, batch_size=32, runner=RunnerConfig(workers=0), optimizers=("adam",))
    res = lock_table(tiny_base, digits, [digits_permuted], specs, tmp_path, cfg)
    assert [r["lock"] for r in res["rows"]] and {r["lock"] for r in res["rows"]} == {"none", "specdef"}
    advs = [r["max_uplift"] for r in res["rows"]]
    assert advs == sorted(advs, reverse=True)  # worst case first
    none = next(r for r in res["rows"] if r["lock"] == "none")
    assert (
        none["utility"] == res["base_utility"]
        and none["tasks"][digits_permuted.name]["worst"] == res["base_best"][digits_permuted.name]
    )
    locked = next(r for r in res["rows"] if r["lock"] == "specdef")
    assert none["lock_peak_mb"] is None and locked["lock_peak_mb"] > 10  # a torch process holds far more than 10 MB
    saved = json.loads((tmp_path / "table.json").read_text())
    assert format_table(saved) == format_table(res)
    assert main(["locks", "--table", str(tmp_path)]) == 0
    assert "specdef" in capsys.readouterr().out
    save(tiny_base, tmp_path / "base", {"task": "digits"})
    assert main(["locks"]) == 0 and "sophon" in capsys.readouterr().out


def test_rescore_of_an_old_table_uses_the_best_scratch_of_any_row_and_is_idempotent():
    """A table written before references existed (scratch and advantage) is read with scratch as the reference."""
    from trainlock.tune.table import rescore

    def row(name, worst, scratch):
        return {
            "lock": name,
            "utility": 0.9,
            "lock_s": 1.0,
            "tasks": {"t": {"worst": worst, "scratch": scratch, "advantage": worst - scratch, "bypass_steps": None}},
        }

    res = {
        "attack_tasks": ["t"],
        "base_utility": 0.9,
        "rows": [row("a", 0.80, 0.70), row("b", 0.75, 0.78), row("c", 0.90, 0.60)],
    }
    once = rescore(res)
    assert once["reference_best"] == {"t": 0.78}
    assert [r["lock"] for r in once["rows"]] == ["c", "a", "b"]  # largest uplift first
    assert [round(r["tasks"]["t"]["uplift"], 6) for r in once["rows"]] == [0.12, 0.02, -0.03]
    assert [r["tasks"]["t"]["reference_own"] for r in once["rows"]] == [0.60, 0.70, 0.78]
    assert all("advantage" not in r["tasks"]["t"] for r in once["rows"])
    twice = rescore(json.loads(json.dumps(once)))
    assert twice == json.loads(json.dumps(once))
    assert "uplift = worst - the best reference attacker of any row (t 0.780)" in format_table(once)


def test_rows_are_red_teamed_as_released(tiny_base, digits, digits_permuted, tmp_path):
    """A frozen lock changes no weight and its requires_grad flags are not released: red-teamed as saved and
    loaded (as an attacker gets it), its row must equal the unlocked base's run for run."""
    name = next(n for n, _ in tiny_base.named_parameters())
    specs = {"none": None, "frozen": {"type": "frozen", "names": [f"^{name}$"]}}
    cfg = TableConfig(budget=6, steps=5, batch_size=32, runner=RunnerConfig(workers=0), optimizers=("adam",))
    res = lock_table(tiny_base, digits, [digits_permuted], specs, tmp_path, cfg)
    rows = {r["lock"]: r["tasks"][digits_permuted.name] for r in res["rows"]}
    assert rows["frozen"]["worst"] == rows["none"]["worst"]
    runs = [
        {
            (r := json.loads(line))["key"]: r["accuracy"]
            for line in (tmp_path / lock / digits_permuted.name / "runs.jsonl").open()
        }
        for lock in ("none", "frozen")
    ]  # by key: a row from scratch the base's table already made is written first, reused
    assert runs[0] == runs[1] and len(runs[0]) >= 6


def test_peak_memory_sees_a_freed_allocation():
    import pytest
    import torch

    from trainlock.tune.table import peak_memory

    with peak_memory("cpu") as before:
        pass
    if before["mb"] is None:
        pytest.skip("no /proc/self peak resident set here")
    with peak_memory("cpu") as peak:
        x = torch.ones(256, 2**18)  # 256 MB, touched
        del x
    assert peak["mb"] >= before["mb"] + 200  # the peak keeps what was freed before the block ended


def test_seeds_give_the_best_of_any_seed_and_the_uplift_spread(tiny_base, digits, digits_permuted, tmp_path):
    specs = {"none": None}
    cfg = TableConfig(
        budget=2, steps=5, batch_size=32, runner=RunnerConfig(workers=0), optimizers=("adam",), seeds=(0, 1)
    )
    res = lock_table(tiny_base, digits, [digits_permuted], specs, tmp_path, cfg)
    cell = res["rows"][0]["tasks"][digits_permuted.name]
    per_seed = json.loads((tmp_path / "none" / digits_permuted.name / "summary.json").read_text())["budgets"][0][
        "seeds"
    ]
    assert [s["seed"] for s in per_seed] == cell["seeds"] == [0, 1]
    assert cell["worst"] == max(s["locked"] for s in per_seed)  # the attacker keeps their best seed
    assert cell["reference_own"] == max(s["reference"]["accuracy"] for s in per_seed)
    ups = sorted(s["uplift"] for s in per_seed)
    assert cell["uplift_seeds"]["min"] == ups[0] and cell["uplift_seeds"]["max"] == ups[-1]
    assert (tmp_path / "none" / digits_permuted.name / "steps-5" / "seed-1" / "runs.jsonl").is_file()
    assert "(seeds " in format_table(res)
