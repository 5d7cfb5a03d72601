"""The red team over several step budgets and seeds: one results directory per pair, min / median / max per
budget, the worst case for the defender as the headline, the trials-to-break curve."""

import json
import statistics

import pytest
import torch

import trainlock as tl
from trainlock.cli.main import main
from trainlock.red_team import RedTeamConfig, RunnerConfig, read_rows, redteam
from trainlock.train import LoopConfig

PNG = b"\x89PNG\r\n\x1a\n"
# the keys a single-budget result has always had (tests and the CLI's --json read them)
SINGLE_KEYS = {
    "worst",
    "locked",
    "scratch",
    "base",
    "compute_ratio_vs_base",
    "compute_ratio_vs_scratch",
    "comparison",
    "reference",
    "uplift",
    "base_uplift",
    "budget",
    "verdict",
    "runs",
    "base_worst",
}


@pytest.fixture(scope="module")
def fresh(digits):
    """An untrained MLP: the 'released' model (a lock is not needed to check the bookkeeping)."""
    torch.manual_seed(1)
    return tl.models.build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[32])


def _cfg(**kw) -> RedTeamConfig:
    return RedTeamConfig(
        loop=LoopConfig(device="cpu", batch_size=32),
        runner=RunnerConfig(workers=0),
        budget=2,
        include=("adam@0.001",),
        references=(),  # the matched runs from scratch only: fast
        **kw,
    )


def _recomputed(rows: list[dict]) -> tuple[float, float]:
    """(best accuracy from the released weights, best from scratch) from a directory's saved rows."""
    ok = [r for r in rows if r.get("accuracy") is not None]
    return (
        max(r["accuracy"] for r in ok if r["config"]["start"] != "scratch"),
        max(r["accuracy"] for r in ok if r["config"]["start"] == "scratch"),
    )


def test_two_budgets_two_seeds(fresh, tiny_base, digits_permuted, tmp_path):
    out = tmp_path / "rt"
    res = redteam(fresh, digits_permuted, _cfg(steps=(10, 5), seeds=(0, 1)), out=out, base=tiny_base)
    dirs = sorted(str(p.relative_to(out)) for p in out.glob("steps-*/seed-*"))
    assert dirs == ["steps-10/seed-0", "steps-10/seed-1", "steps-5/seed-0", "steps-5/seed-1"]
    assert not (out / "runs.jsonl").exists()
    assert [b["steps"] for b in res["budgets"]] == [5, 10]
    uplifts = {}
    for b in res["budgets"]:
        assert [s["seed"] for s in b["seeds"]] == [0, 1]
        locked, ref, up, base_up = [], [], [], []
        for s in b["seeds"]:
            d = out / s["dir"]
            rows = read_rows(d / "runs.jsonl")
            assert {r["config"]["finetune"]["loop"]["seed"] for r in rows} == {s["seed"]}
            assert {r["config"]["finetune"]["loop"]["max_steps"] for r in rows} == {b["steps"]}
            best, scratch = _recomputed(rows)
            base_best, _ = _recomputed(read_rows(d / "base" / "runs.jsonl"))
            assert s["locked"] == pytest.approx(best) and s["reference"]["accuracy"] == pytest.approx(scratch)
            assert s["uplift"] == pytest.approx(best - scratch)
            assert s["base_uplift"] == pytest.approx(base_best - scratch)
            locked.append(best), ref.append(scratch), up.append(best - scratch), base_up.append(base_best - scratch)
            uplifts[b["steps"], s["seed"]] = best - scratch
            assert (d / "report.md").is_file() and (d / "trials_to_break.png").read_bytes().startswith(PNG)
        for key, values in (("locked", locked), ("reference", ref), ("uplift", up), ("base_uplift", base_up)):
            assert b[key] == pytest.approx(
                {"min": min(values), "median": statistics.median(values), "max": max(values)}
            ), key
    # the headline is the worst case for the defender: the (budget, seed) with the largest uplift
    assert res["uplift"] == pytest.approx(max(uplifts.values()))
    at = res["worst_case_at"]
    assert uplifts[at["steps"], at["seed"]] == pytest.approx(res["uplift"])
    assert res["budget"]["steps_per_run"] == at["steps"] and res["budget"]["seed"] == at["seed"]
    assert f"{at['steps']} steps per run, seed {at['seed']}" in res["verdict"]
    assert set(res) >= SINGLE_KEYS
    png = out / "trials_to_break.png"
    assert res["trials_to_break"]["png"] == str(png) and png.read_bytes().startswith(PNG)
    report = (out / "report.md").read_text()
    assert "| steps per run |" in report and "trials_to_break.png" in report and "training / " in report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["budgets"] == json.loads(json.dumps(res["budgets"]))
    # resumable: a rerun runs nothing and says the same
    n = {d: len(read_rows(out / d / "runs.jsonl")) for d in dirs}
    again = redteam(fresh, digits_permuted, _cfg(steps=(10, 5), seeds=(0, 1)), out=out, base=tiny_base)
    assert again["budgets"] == res["budgets"]
    assert n == {d: len(read_rows(out / d / "runs.jsonl")) for d in dirs}


def test_single_budget_keeps_its_layout_and_keys(fresh, tiny_base, digits_permuted, tmp_path):
    out = tmp_path / "one"
    res = redteam(fresh, digits_permuted, _cfg(), out=out, base=tiny_base)
    assert set(res) >= SINGLE_KEYS and "worst_case_at" not in res
    assert (out / "runs.jsonl").is_file() and not list(out.glob("steps-*"))
    assert res["budget"] == {
        "steps_per_run": _cfg().loop.total_steps(len(digits_permuted.y_train)),
        "n_train": len(digits_permuted.y_train),
        "n_test": len(digits_permuted.y_test),
    }
    assert (out / "trials_to_break.png").read_bytes().startswith(PNG)
    assert res["trials_to_break"]["png"] == str(out / "trials_to_break.png")
    curve = res["trials_to_break"]["locked"]
    assert curve == sorted(curve) and curve[-1] == pytest.approx(res["locked"]["accuracy"])
    [b] = res["budgets"]
    assert [s["seed"] for s in b["seeds"]] == [0] and b["uplift"]["max"] == pytest.approx(res["uplift"])
    # one listed budget: the same layout, each run exactly that many steps (the epochs raised to reach it)
    one = redteam(fresh, digits_permuted, _cfg(steps=(60,), seeds=(3,)), out=tmp_path / "sixty")
    assert one["budget"]["steps_per_run"] == 60 and (tmp_path / "sixty" / "runs.jsonl").is_file()
    assert all(r["steps"] == 60 for r in one["runs"] if r.get("accuracy") is not None)
    assert {r["config"]["finetune"]["loop"]["seed"] for r in one["runs"]} == {3}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--steps", "0"], "--steps: must be an integer >= 1, got '0'"),  # refused by the parser
        (["--steps", "100", "-1"], "--steps: must be an integer >= 1, got '-1'"),
        (["--steps", "100", "100"], "steps lists 100 more than once"),
        (["--seeds", "0", "1", "0"], "seeds lists 0 more than once"),
    ],
)
def test_cli_rejects_bad_budgets_before_any_work(flags, message, tmp_path, capsys):
    # the model directory does not exist: loading it would fail with another message
    try:
        code = main(["redteam", str(tmp_path / "missing"), "--task", "digits", "--out", str(tmp_path / "o"), *flags])
    except SystemExit as e:  # the parser's own refusal
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match=r"steps|seeds"):
        RedTeamConfig(**{flags[0][2:]: tuple(int(v) for v in flags[1:])})
