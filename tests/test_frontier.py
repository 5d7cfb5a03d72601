"""The utility-uplift frontier: specs swept over each lock's dial, the table read back as points, the Pareto set
and the goal check (uplift <= 2 points where the base's is >= 10, utility within 1 point of the base's)."""

import dataclasses
import json

import pytest

from trainlock.cli.main import main
from trainlock.locks import LOCKS
from trainlock.tune.frontier import DIALS, NO_DIAL, expand, format_frontier, frontier, save_frontier

# ---------------------------------------------------------------- expand


def test_expand_sweeps_each_dial_and_keeps_what_is_fixed():
    notes = []
    specs = {
        "none": None,
        "specdef": {"type": "specdef", "top_k": 2},
        "fixed": {"type": "specdef", "alpha": 0.3},
        "listed": {"type": "spectral-cap", "max_sigma": [4, 0.5]},
        "pruned": {"type": "sparsity", "k": 10},  # k takes the place of the dial: one point
        "both": [{"type": "frozen", "names": ["bias"]}, {"type": "architecture"}],
        "comp": {"type": "composite", "locks": [{"type": "specdef"}]},
        "frozen": {"type": "frozen", "names": ["bias"]},
    }
    out = expand(specs, notes=notes)
    assert list(out) == [
        "none",
        "specdef@alpha=0.9",
        "specdef@alpha=0.5",
        "specdef@alpha=0.1",
        "fixed",
        "listed@max_sigma=4",
        "listed@max_sigma=0.5",
        "pruned",
        "both",
        "comp",
        "frozen",
    ]
    assert out["none"] is None
    assert out["specdef@alpha=0.5"] == {"type": "specdef", "top_k": 2, "alpha": 0.5}  # the other fields kept
    assert out["fixed"] is specs["fixed"] and out["pruned"] is specs["pruned"]
    assert out["listed@max_sigma=4"] == {"type": "spectral-cap", "max_sigma": 4}
    assert specs["specdef"] == {"type": "specdef", "top_k": 2}  # the input is not changed
    said = "\n".join(notes)
    assert "fixed: alpha = 0.3: one point" in said and "pruned: k set instead of fraction" in said
    assert "both: a composite" in said and "comp: a composite" in said and "frozen: frozen has no dial" in said


def test_expand_sweeps_a_fixed_dial_when_asked_and_refuses_clashes():
    out = expand({"s": {"type": "specdef", "alpha": 0.3}, "p": {"type": "sparsity", "k": 10}}, sweep_fixed=True)
    assert [v["alpha"] for k, v in out.items() if k.startswith("s@")] == [0.9, 0.5, 0.1, 0.3]
    assert out["p@fraction=0.5"] == {"type": "sparsity", "fraction": 0.5}  # k dropped for the dial
    with pytest.raises(ValueError, match=r"two rows would be called 'a@alpha=0\.5'"):
        expand({"a": {"type": "specdef"}, "a@alpha=0.5": None})
    with pytest.raises(ValueError, match="a lock spec is"):
        expand({"a": {"alpha": 0.5}})
    with pytest.raises(ValueError, match="empty list"):
        expand({"a": {"type": "specdef", "alpha": []}})


def test_every_registered_lock_has_a_dial_or_a_reason_and_each_dial_value_builds():
    builtin = [n for n in LOCKS.names() if LOCKS.origin(n) is None and LOCKS.get(n).__module__.startswith("trainlock.")]
    assert [n for n in builtin if n not in DIALS and n not in NO_DIAL] == []
    for name, (field, values) in DIALS.items():
        if name not in builtin:  # a lock still being written
            continue
        cls = LOCKS.get(name)
        assert field in {f.name for f in dataclasses.fields(cls.config_cls)}, (name, field)
        for v in values:
            cls.from_config({**(cls.example or {}), field: v})  # a valid config


# ---------------------------------------------------------------- frontier

REF = 0.50  # every row's own best reference on both tasks


def _row(name, utility, worst, seeds=None, spec="lock"):
    tasks = {}
    for t, w in worst.items():
        tasks[t] = {"worst": w, "reference": REF, "scratch": REF, "bypass_steps": None, "seeds": [0]}
        if seeds and t in seeds:
            lo, hi = seeds[t]
            tasks[t].update(seeds=[0, 1, 2], uplift_seeds={"min": lo, "median": (lo + hi) / 2, "max": hi})
    spec = None if spec is None else {"type": "specdef", "alpha": 0.5}
    return {"lock": name, "spec": spec, "utility": utility, "lock_s": 1.0, "tasks": tasks}


def _table(with_winner=True, base_worst=(0.80, 0.55)):
    """Base: uplift 30 points on task a, 5 on b (nothing to protect there). Locks (utility; uplift a, b):
    win (89.5; 1.5, 20): reaches the goal (b is not checked); low (85; 0, 0): safe but too costly;
    mid (88; 10, 10): on the front; bad (86; 15, 0): dominated by mid."""
    rows = [
        _row("none", 0.90, {"a": base_worst[0], "b": base_worst[1]}, spec=None),
        _row("low", 0.85, {"a": 0.50, "b": 0.50}),
        _row("mid", 0.88, {"a": 0.60, "b": 0.60}, seeds={"a": (0.08, 0.12), "b": (0.09, 0.11)}),
        _row("bad", 0.86, {"a": 0.65, "b": 0.50}),
    ]
    if with_winner:
        rows.append(_row("win", 0.895, {"a": 0.515, "b": 0.70}))
    return {
        "rows": rows,
        "base_utility": 0.90,
        "base_best": {"a": base_worst[0], "b": base_worst[1]},
        "retain_task": "r",
        "attack_tasks": ["a", "b"],
    }


def _points(res):
    return {p["row"]: p for p in res["points"]}


def test_frontier_points_pareto_set_and_a_reached_goal():
    table = _table()
    before = json.dumps(table, sort_keys=True)
    res = frontier(table)
    assert json.dumps(table, sort_keys=True) == before  # the table is not changed
    assert [p["row"] for p in res["points"]] == ["none", "win", "bad", "mid", "low"]  # worst case first
    pts = _points(res)
    assert pts["win"]["uplift"] == pytest.approx(0.20) and pts["win"]["worst_task"] == "b"
    assert pts["win"]["goal_uplift"] == pytest.approx(0.015)  # task b is not protected
    assert pts["none"]["base"] and res["base"] == "none" and not any(pts[n]["base"] for n in ("win", "low"))
    assert res["pareto"] == ["none", "win", "mid", "low"]  # by utility; bad is dominated by mid
    assert not pts["bad"]["pareto"]
    # the seed range of the worst case: the largest minimum and the largest maximum over the tasks
    assert pts["mid"]["uplift_seeds"] == {"min": 0.09, "max": 0.12, "seeds": 3} and pts["low"]["uplift_seeds"] is None
    goal = res["goal"]
    assert goal["reached"] is True and goal["reaching"] == ["win"] and goal["best"] == "win"
    assert goal["nearest"] is None and pts["win"]["reaches_goal"] and not pts["low"]["reaches_goal"]
    assert list(goal["protected"]) == ["a"] and goal["protected"]["a"] == pytest.approx(0.30)
    assert list(goal["nothing_to_protect"]) == ["b"] and goal["nothing_to_protect"]["b"] == pytest.approx(0.05)
    assert goal["utility_floor"] == pytest.approx(0.89)
    text = format_frontier(res)
    lines = text.splitlines()
    assert lines[2].startswith("none") and "base" in lines[2] and lines[3].startswith("win") and "GOAL" in lines[3]
    assert "+9.0..+12.0" in text  # mid's seed range, in points
    assert "nothing to protect (base uplift under the bar, left out of the goal): b (+5.0)" in text
    assert lines[-1].startswith("goal: ") and "REACHED by win on a" in lines[-1]


def test_frontier_not_reached_names_the_nearest_point_and_its_distance():
    res = frontier(_table(with_winner=False))
    goal = res["goal"]
    assert goal["reached"] is False and goal["reaching"] == [] and goal["best"] is None
    near = goal["nearest"]
    # low: 4 points of utility short, no uplift excess; mid: 1 short, 8 over (8.06); bad: 3 short, 13 over
    assert near["row"] == "low"
    assert near["utility_shortfall"] == pytest.approx(0.04) and near["uplift_excess"] == pytest.approx(0.0)
    assert near["distance"] == pytest.approx(4.0)
    mid = _points(res)["mid"]
    assert mid["utility_shortfall"] == pytest.approx(0.01) and mid["uplift_excess"] == pytest.approx(0.08)
    assert mid["distance"] == pytest.approx(65**0.5)
    verdict = format_frontier(res).splitlines()[-1]
    assert "NOT REACHED on a; nearest low: utility short by 4.0 points, uplift over by 0.0 points" in verdict
    assert "(distance 4.0 points)" in verdict


def test_tasks_under_ten_points_are_left_out_and_no_base_row_reads_base_best():
    res = frontier(_table(base_worst=(0.58, 0.55)))  # base uplift 8 and 5 points: nothing to protect
    assert res["goal"]["reached"] is None and res["goal"]["protected"] == {}
    assert set(res["goal"]["nothing_to_protect"]) == {"a", "b"} and res["goal"]["nearest"] is None
    assert "nothing to protect" in res["goal"]["verdict"] and not any(p["reaches_goal"] for p in res["points"])
    # a table without the base's row: the base's uplift comes from base_best and the best reference
    table = _table()
    table["rows"] = [r for r in table["rows"] if r["lock"] != "none"]
    res = frontier(table)
    assert res["base"] is None and list(res["goal"]["protected"]) == ["a"] and res["goal"]["reaching"] == ["win"]


def test_the_plot_and_json_are_written(tmp_path):
    res = frontier(_table())
    js, png = save_frontier(res, tmp_path / "out")
    assert json.loads(js.read_text())["goal"]["reaching"] == ["win"]
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5000


# ---------------------------------------------------------------- CLI


def test_cli_table_frontier_redraws_from_table_json(tmp_path, capsys):
    d = tmp_path / "t"
    d.mkdir()
    (d / "table.json").write_text(json.dumps(_table(with_winner=False)))
    assert main(["locks", "--table", str(d), "--frontier"]) == 0
    out = capsys.readouterr().out
    assert "nearest low" in out and "frontier.png" in out
    assert (d / "frontier.png").stat().st_size > 0
    assert json.loads((d / "frontier.json").read_text())["goal"]["nearest"]["row"] == "low"
    assert main(["locks", "--table", str(d), "--frontier", "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "frontier.json").is_file()
    capsys.readouterr()
    assert main(["locks", "--table", str(d)]) == 0 and "REACHED" not in capsys.readouterr().out  # the table only


def test_cli_frontier_without_a_table_or_a_run_is_refused_in_one_line(capsys):
    assert main(["locks", "--frontier"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--frontier needs --run MODEL_DIR" in err[0] and "--table DIR" in err[0]


def test_cli_run_frontier_sweeps_builds_and_draws(tiny_model_dir, tmp_path, capsys):
    loop = {"optimizer": "adadelta", "lr": 1.0, "max_steps": 3, "batch_size": 32, "device": "cpu"}
    specs = {"sd": {"type": "specdef", "alpha": [0.9, 0.1], "loop": loop}}
    out = tmp_path / "fr"
    argv = ["locks", "--run", str(tiny_model_dir), "--specs", json.dumps(specs), "--attack-tasks", "digits"]
    argv += ["--frontier", "--out", str(out), "--budget", "2", "--steps", "3", "--batch-size", "32"]
    argv += ["--optimizers", "adam", "--workers", "0", "--train-samples", "256", "--test-samples", "128"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "frontier: 1 specs -> 3 rows: none, sd@alpha=0.9, sd@alpha=0.1" in text
    table = json.loads((out / "table.json").read_text())
    assert {r["lock"] for r in table["rows"]} == {"none", "sd@alpha=0.9", "sd@alpha=0.1"}
    res = json.loads((out / "frontier.json").read_text())
    assert res["base"] == "none" and {p["row"] for p in res["points"]} == {r["lock"] for r in table["rows"]}
    assert (out / "frontier.png").stat().st_size > 0 and text.rstrip().splitlines()[-2].startswith("goal: ")


# ---------------------------------------------------------------- lock seeds


def test_expand_locks_a_randomized_lock_once_per_seed_and_says_which_rows_are_one_draw():
    notes = []
    specs = {
        "none": None,
        "u": {"type": "undo", "noise": [0.5, 0.75]},
        "fixed": {"type": "undo", "noise": 0.5, "seed": 7},  # its seed is set: one draw
        "sd": {"type": "specdef", "alpha": 0.5},  # draws no seed
        "comp": [{"type": "frozen", "names": ["bias"]}],
    }
    out = expand(specs, notes=notes, lock_seeds=(1, 2))
    assert list(out) == [
        "none",
        "u@noise=0.5#lock-seed=1",
        "u@noise=0.5#lock-seed=2",
        "u@noise=0.75#lock-seed=1",
        "u@noise=0.75#lock-seed=2",
        "fixed",
        "sd",
        "comp",
    ]
    assert out["u@noise=0.75#lock-seed=2"] == {"type": "undo", "noise": 0.75, "seed": 2}
    assert out["fixed"] == specs["fixed"] and specs["u"] == {"type": "undo", "noise": [0.5, 0.75]}
    said = "\n".join(notes)
    assert "fixed: seed 7 set: one draw" in said and "sd: specdef draws no lock seed: one draw" in said
    assert "comp: composite draws no lock seed: one draw" in said
    assert list(expand({"u": {"type": "undo", "noise": 0.5}})) == ["u"]  # no lock seeds: as before
    with pytest.raises(ValueError, match="distinct integers"):
        expand({"u": {"type": "undo"}}, lock_seeds=(1, 1))
    with pytest.raises(ValueError, match="kept for the rows of lock seeds"):
        expand({"u#lock-seed=1": {"type": "specdef", "alpha": 0.5}}, lock_seeds=(1,))


def test_frontier_scores_a_randomized_lock_by_its_worst_draw():
    """Draw 1 alone would reach the goal (utility 89.5, uplift 1.5 on a); draw 2 keeps 20 points of uplift and
    draw 3 costs utility: the merged point has the lowest utility and the highest uplift, and misses."""
    table = _table(with_winner=False)
    table["rows"] += [
        _row("u#lock-seed=1", 0.895, {"a": 0.515, "b": 0.50}),
        _row("u#lock-seed=2", 0.90, {"a": 0.70, "b": 0.50}, seeds={"a": (0.18, 0.22)}),
        _row("u#lock-seed=3", 0.87, {"a": 0.55, "b": 0.60}),
    ]
    for r in table["rows"][-3:]:
        r["spec"] = {"type": "undo", "noise": 0.5, "seed": int(r["lock"][-1])}
    res = frontier(table)
    pts = _points(res)
    assert not any("#lock-seed=" in name for name in pts)
    u = pts["u"]
    assert u["utility"] == pytest.approx(0.87) and u["uplift"] == pytest.approx(0.20) and u["worst_task"] == "a"
    assert u["goal_uplift"] == pytest.approx(0.20) and not u["reaches_goal"] and not u["base"]
    assert u["utility_shortfall"] == pytest.approx(0.02) and u["uplift_excess"] == pytest.approx(0.18)
    assert u["spec"] == {"type": "undo", "noise": 0.5}  # the seed is a draw's, not the point's
    assert u["uplift_seeds"]["min"] == pytest.approx(0.015) and u["uplift_seeds"]["max"] == pytest.approx(0.22)
    assert [(d["lock_seed"], d["utility"]) for d in u["draws"]] == [(1, 0.895), (2, 0.90), (3, 0.87)]
    assert res["goal"]["reached"] is False and res["goal"]["nearest"]["row"] == "low"
    assert [p["row"] for p in res["points"]].index("u") < [p["row"] for p in res["points"]].index("mid")
    text = format_frontier(res)
    assert "worst of 3 lock seeds" in text and "u: seed 1 89.5% / +1.5, seed 2 90.0% / +20.0" in text
    # the one lucky draw alone, as a row of its own, would have reached the goal
    table["rows"] = [*table["rows"][:-3], dict(table["rows"][-3], lock="lucky")]
    assert frontier(table)["goal"]["reaching"] == ["lucky"]


def test_cli_lock_seeds_without_a_frontier_run_is_refused_in_one_line(tmp_path, capsys):
    assert main(["locks", "--table", str(tmp_path), "--lock-seeds", "1", "2"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--lock-seeds goes with --frontier --run" in err[0]


def test_cli_run_frontier_with_lock_seeds_locks_each_draw(tiny_model_dir, tmp_path, capsys):
    loop = {"optimizer": "adam", "lr": 1e-3, "max_steps": 3, "batch_size": 32, "device": "cpu"}
    specs = {"u": {"type": "undo", "noise": 0.5, "loop": loop}}
    out = tmp_path / "fr"
    argv = ["locks", "--run", str(tiny_model_dir), "--specs", json.dumps(specs), "--attack-tasks", "digits"]
    argv += ["--frontier", "--out", str(out), "--budget", "1", "--steps", "2", "--batch-size", "32"]
    argv += ["--optimizers", "adam", "--workers", "0", "--train-samples", "128", "--test-samples", "64"]
    assert main([*argv, "--lock-seeds", "3", "4"]) == 0
    text = capsys.readouterr().out
    assert "frontier: 1 specs -> 3 rows: none, u#lock-seed=3, u#lock-seed=4" in text
    table = json.loads((out / "table.json").read_text())
    rows = {r["lock"]: r for r in table["rows"]}
    assert rows["u#lock-seed=3"]["spec"]["seed"] == 3 and rows["u#lock-seed=4"]["spec"]["seed"] == 4
    res = json.loads((out / "frontier.json").read_text())
    assert {p["row"] for p in res["points"]} == {"none", "u"}
    u = next(p for p in res["points"] if p["row"] == "u")
    assert [d["lock_seed"] for d in u["draws"]] == [3, 4]
    assert u["utility"] == min(rows[f"u#lock-seed={s}"]["utility"] for s in (3, 4))
    assert "worst of 2 lock seeds" in text
