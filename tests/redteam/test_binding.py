"""Issue 24: a red-team results directory is bound to the model, the task and the full config it was made with
(binding.json, written before the first run); resuming under another one is refused before any work, naming the
model or the first differing config fields (and their flags)."""

import copy
import dataclasses
import json
import logging

import pytest
import torch

from trainlock.cli import main
from trainlock.cli.main import build_parser
from trainlock.red_team import RedTeamConfig, RunnerConfig, core, read_rows, redteam, runner
from trainlock.red_team.binding import BINDING, IDENTITY, _leaves, check, config_dict, flag_of
from trainlock.train import LoopConfig


def _cfg(**kw) -> RedTeamConfig:
    loop = kw.pop("loop", {})
    return RedTeamConfig(
        loop=LoopConfig(**{"device": "cpu", "max_steps": 3, "batch_size": 32, **loop}),
        runner=kw.pop("runner", RunnerConfig(workers=0)),
        budget=kw.pop("budget", 2),
        include=("adam@0.001",),
        references=(),  # the matched runs from scratch only: fast
        **kw,
    )


def _fingerprint(d):
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def ran(tiny_base, digits_permuted, tmp_path):
    """A results directory of `_cfg()` on the tiny base."""
    out = tmp_path / "rt"
    redteam(tiny_base, digits_permuted, _cfg(), out=out)
    return out


@pytest.fixture
def counting(monkeypatch):
    """The keys of the runs actually trained from here on."""
    calls = []
    real = runner.run_spec
    monkeypatch.setattr(runner, "run_spec", lambda t, s: calls.append(s.key()) or real(t, s))
    return calls


def test_the_binding_records_the_model_task_and_full_config(ran, tiny_base):
    from trainlock.io.hashing import state_hashes

    b = json.loads((ran / BINDING).read_text())
    assert b["identity"]["model_state_sha256"] == state_hashes(tiny_base)["state"]
    assert b["identity"]["task"] == "digits-permuted-1" and len(b["identity"]["task_sha256"]) == 64
    assert b["config"] == _cfg().to_dict() and len(b["config_sha256"]) == 64 and b["devices"] == ["cpu"]
    assert json.loads((ran / IDENTITY).read_text()) == b["identity"]


def test_resume_with_the_same_config_reuses_every_row(ran, tiny_base, digits_permuted, counting):
    rows = read_rows(ran / "runs.jsonl")
    again = redteam(tiny_base, digits_permuted, _cfg(), out=ran)
    assert counting == [] and read_rows(ran / "runs.jsonl") == rows
    assert [r["key"] for r in again["runs"]] == [r["key"] for r in rows]


def test_workers_and_backend_do_not_bind(ran, tiny_base, digits_permuted, counting):
    n = len(read_rows(ran / "runs.jsonl"))
    # nothing left to run: the Ray backend is never started
    redteam(tiny_base, digits_permuted, _cfg(runner=RunnerConfig(backend="ray", workers=3)), out=ran)
    redteam(tiny_base, digits_permuted, _cfg(runner=RunnerConfig(workers=2)), out=ran)
    assert counting == [] and len(read_rows(ran / "runs.jsonl")) == n


def test_a_larger_budget_extends_and_a_smaller_one_reports_the_first_runs(ran, tiny_base, digits_permuted, counting):
    first = {r["key"] for r in read_rows(ran / "runs.jsonl")}
    more = redteam(tiny_base, digits_permuted, _cfg(budget=3), out=ran)
    assert len(more["runs"]) > len(first) and not set(counting) & first  # the runs there were not trained again
    assert json.loads((ran / BINDING).read_text())["config"]["budget"] == 3
    counting.clear()
    back = redteam(tiny_base, digits_permuted, _cfg(budget=2), out=ran)
    assert counting == [] and {r["key"] for r in back["runs"]} == first


@pytest.mark.parametrize(
    "change, says",
    [
        ({"lrs": (1e-3, 1e-2)}, "lrs (--lrs): [] there, [0.001, 0.01] now"),
        ({"optimizers": ("adam",)}, 'optimizers (--optimizers): [] there, ["adam"] now'),
        ({"loop": {"epochs": 2}}, "loop.epochs (--epochs): 1 there, 2 now"),
        ({"steps": (5,)}, "steps (--steps)"),
        ({"target_accuracy": 0.5}, "target_accuracy (--target-accuracy)"),
        ({"loop": {"lr": 0.5}}, "loop.lr: 0.001 there, 0.5 now"),  # not a flag of redteam: the field alone
    ],
)
def test_another_config_is_refused_naming_the_field(ran, tiny_base, digits_permuted, counting, change, says):
    before = _fingerprint(ran)
    with pytest.raises(ValueError, match="holds red-team runs of another config") as e:
        redteam(tiny_base, digits_permuted, _cfg(**copy.deepcopy(change)), out=ran)
    assert says in str(e.value) and "Choose another --out" in str(e.value) and "\n" not in str(e.value)
    assert counting == [] and _fingerprint(ran) == before  # refused before any work, nothing written


def test_another_model_is_refused(ran, tiny_base, digits_permuted, counting):
    other = copy.deepcopy(tiny_base)
    with torch.no_grad():
        next(other.parameters())[0, 0] += 1e-3
    before = _fingerprint(ran)
    with pytest.raises(ValueError, match=r"runs of another model_state_sha256 \(the model's weights differ\)"):
        redteam(other, digits_permuted, _cfg(), out=ran)
    assert counting == [] and _fingerprint(ran) == before


def test_the_binding_is_written_before_the_first_run(tiny_base, digits_permuted, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("killed")

    monkeypatch.setattr(core, "run_suite", boom)
    out = tmp_path / "rt"
    with pytest.raises(RuntimeError, match="killed"):
        redteam(tiny_base, digits_permuted, _cfg(), out=out)
    assert json.loads((out / BINDING).read_text())["config"] == _cfg().to_dict()
    assert (out / IDENTITY).is_file()
    with pytest.raises(ValueError, match=r"loop.max_steps \(--max-steps\): 3 there, 4 now"):
        redteam(tiny_base, digits_permuted, _cfg(loop={"max_steps": 4}), out=out)


def test_a_directory_written_before_binding_resumes_with_one_warning(ran, tiny_base, digits_permuted, counting, caplog):
    """identity.json but no binding.json (trainlock before this change): resumed, one warning, bound from now on."""
    (ran / BINDING).unlink()
    n = len(read_rows(ran / "runs.jsonl"))
    with caplog.at_level(logging.WARNING, logger="trainlock.red_team.core"):
        redteam(tiny_base, digits_permuted, _cfg(), out=ran)
    said = [r.getMessage() for r in caplog.records if "recorded their config" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0]
    assert counting == [] and len(read_rows(ran / "runs.jsonl")) == n and (ran / BINDING).is_file()
    with pytest.raises(ValueError, match="--lrs"):
        redteam(tiny_base, digits_permuted, _cfg(lrs=(1e-3, 1e-2)), out=ran)


def test_rows_without_any_record_are_still_refused(ran, tiny_base, digits_permuted):
    (ran / BINDING).unlink()
    (ran / IDENTITY).unlink()
    with pytest.raises(ValueError, match="without a record of which model they attacked"):
        redteam(tiny_base, digits_permuted, _cfg(), out=ran)


def test_a_broken_binding_is_refused(ran, tiny_base, digits_permuted):
    (ran / BINDING).write_text("{not json")
    with pytest.raises(ValueError, match=r"binding\.json is not a red-team binding"):
        redteam(tiny_base, digits_permuted, _cfg(), out=ran)


def test_device_and_search_trials(tmp_path):
    """Another device: allowed, warned, recorded. More search trials (or none): allowed; fewer: refused."""
    ident = {"model_state_sha256": "a", "task": "t", "task_sha256": "b", "retain": None}
    record, notes = check(tmp_path, ident, _cfg(search_trials=4))
    assert notes == []
    (tmp_path / BINDING).write_text(json.dumps(record))
    record, notes = check(tmp_path, ident, _cfg(loop={"device": "auto"}, search_trials=6))
    assert record["devices"] == ["cpu", "auto"] and "new ones on auto" in notes[0]
    assert record["config"]["search_trials"] == 6
    (tmp_path / BINDING).write_text(json.dumps(record))
    record, notes = check(tmp_path, ident, _cfg())  # search_trials 0: no search this time
    assert notes == [] and record["config"]["search_trials"] == 6 and record["devices"] == ["cpu", "auto"]
    with pytest.raises(ValueError, match=r"search_trials \(--search-trials\): 6 there, 2 now"):
        check(tmp_path, ident, _cfg(search_trials=2))


def test_the_storage_password_is_not_recorded():
    cfg = dataclasses.replace(_cfg(), storage="postgresql+psycopg://me:secret@db.example/study")
    assert config_dict(cfg)["storage"] == "postgresql+psycopg://me:***@db.example/study"


def test_every_named_flag_is_a_redteam_flag():
    parser = build_parser(only=["redteam"])
    sub = next(a for a in parser._actions if isinstance(getattr(a, "choices", None), dict)).choices["redteam"]
    flags = {o for a in sub._actions for o in a.option_strings}
    named = {k: flag_of(k) for k in _leaves(config_dict(RedTeamConfig()))}
    assert {f for f in named.values() if f} <= flags
    assert named["loop.max_steps"] == "--max-steps" and named["runner.workers"] == "--workers"
    assert named["loop.lr"] is None  # set per run by the suite


def test_several_budgets_bind_the_root_and_each_directory(tiny_base, digits_permuted, tmp_path):
    out = tmp_path / "multi"
    redteam(tiny_base, digits_permuted, _cfg(steps=(3, 4), budget=1), out=out)
    assert json.loads((out / BINDING).read_text())["config"]["steps"] == [3, 4]
    pair = json.loads((out / "steps-4" / "seed-0" / BINDING).read_text())["config"]
    assert pair["loop"]["max_steps"] == 4 and pair["loop"]["seed"] == 0  # the pair's own loop
    with pytest.raises(ValueError, match=r"seeds \(--seeds\): \[\] there, \[0, 1\] now"):
        redteam(tiny_base, digits_permuted, _cfg(steps=(3, 4), seeds=(0, 1), budget=1), out=out)


def _cli(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out + out.err


def test_cli_refuses_another_config_with_exit_2_and_one_line(tiny_model_dir, tmp_path, capsys):
    argv = ["redteam", tiny_model_dir, "--task", "digits", "--out", tmp_path / "rt", "--budget", "2"]
    argv += ["--include", "adam@0.001", "--references", "--workers", "0", "--max-steps", "2"]
    code, text = _cli(argv, capsys)
    assert code == 0, text
    before = _fingerprint(tmp_path / "rt")
    code, text = _cli([*argv, "--max-steps", "3", "--lrs", "0.001", "0.01"], capsys)
    lines = [line for line in text.splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1 and "Traceback" not in text, text
    assert "loop.max_steps (--max-steps): 2 there, 3 now" in lines[0] and "--lrs" in lines[0]
    assert _fingerprint(tmp_path / "rt") == before
    code, text = _cli([*argv, "--workers", "1", "--budget", "3"], capsys)  # extends: allowed
    assert code == 0, text
