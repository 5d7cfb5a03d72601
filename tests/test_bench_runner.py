"""benchmarks/run_all.py (`make bench`): runs each benchmark in its own process, collects the lines each reports
with goals.report, and prints them as one table with the machine state; a failing benchmark is a MISS row."""

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def run_all(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import goals
    import run_all

    return run_all, goals


def test_report_line_and_verdict(run_all, capsys):
    _, goals = run_all
    assert goals.report("a ratio", 1.234, "<=", 1.5) is True
    assert goals.report("a rate", 1.9, ">=", 2.0) is False
    out = capsys.readouterr().out.splitlines()
    assert out == ["GOAL | a ratio | 1.23x | <= 1.5x | ok", "GOAL | a rate | 1.9x | >= 2x | MISS"]


def test_summary_collects_every_goal_and_marks_failures(run_all, tmp_path, monkeypatch, capsys):
    mod, _ = run_all
    (tmp_path / "good.py").write_text(
        f"import sys; sys.path.insert(0, {str(BENCH)!r})\n"
        "from goals import report\n"
        "print('a table line')\n"
        "report('fast thing', 0.5, '<=', 1.0)\n"
        "report('slow thing', 3.0, '<=', 1.0, unit=' s')\n"
        "from goals import unmeasured\n"
        "unmeasured('bf16 thing', '<=', 1.0, 'no native bf16 here', unit=' points')\n"
    )
    (tmp_path / "bad.py").write_text("raise SystemExit(3)\n")
    monkeypatch.setattr(mod, "HERE", tmp_path)
    monkeypatch.setattr(mod, "BENCHES", [("good", ["good.py"], {}), ("bad", ["bad.py"], {})])
    monkeypatch.setattr(sys, "argv", ["run_all.py", "--out", str(tmp_path / "out")])
    mod.main()
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| fast thing | 0.5x | <= 1x | ok |" in summary
    assert "| slow thing | 3 s | <= 1 s | MISS |" in summary
    assert "| bad | failed (exit 3;" in summary
    assert "a table line" in (tmp_path / "out" / "good.txt").read_text()
    assert "| bf16 thing | not measured: no native bf16 here | <= 1 points | n/a |" in summary
    assert "1 of 3 goals met (1 not measurable on this machine)" in capsys.readouterr().out


def test_unknown_benchmark_is_refused(run_all, monkeypatch):
    mod, _ = run_all
    monkeypatch.setattr(sys, "argv", ["run_all.py", "--only", "nope"])
    with pytest.raises(SystemExit):
        mod.main()
