"""`headstart`: per data budget, the model's best attack beside the best reference attacker (uplift)."""

import json

import pytest

from trainlock.cli.main import main
from trainlock.red_team.headstart import HeadstartConfig, headstart
from trainlock.red_team.runner import RunnerConfig


def test_headstart_per_budget(tiny_base, digits_permuted, tmp_path):
    cfg = HeadstartConfig(
        budgets=(40, 120),
        steps=15,
        lrs=(1e-3,),
        optimizer="adam",
        batch_size=32,
        test_samples=200,
        runner=RunnerConfig(workers=0),
    )
    res = headstart(tiny_base, digits_permuted, cfg, out=tmp_path)
    assert [(b["n"], b["steps"]) for b in res["budgets"]] == [(40, 15), (120, 15)]
    for b in res["budgets"]:
        attackers = {r["attacker"] for r in b["reference_runs"]}
        assert "scratch:adam@0.001" in attackers and any(a.startswith("classical") for a in attackers)
        best_ref = max(r["accuracy"] for r in b["reference_runs"] if r["accuracy"] is not None)
        assert b["reference"]["accuracy"] == best_ref
        best_model = max(r["accuracy"] for r in b["model_runs"] if r["accuracy"] is not None)
        assert b["model"]["accuracy"] == best_model
        assert b["uplift"] == pytest.approx(best_model - best_ref)
    on_disk = json.loads((tmp_path / "headstart.json").read_text())
    assert on_disk["budgets"][0]["n"] == 40 and (tmp_path / "headstart.png").is_file()
    assert "| 40 | 15 |" in (tmp_path / "headstart.md").read_text()


def test_headstart_per_step_budget(tiny_base, digits_permuted, tmp_path):
    """Several step budgets: one row per (n, steps); the trained references get each budget too."""
    cfg = HeadstartConfig(
        budgets=(60,),
        steps=(3, 30),
        lrs=(1e-3,),
        optimizer="adam",
        batch_size=32,
        test_samples=150,
        probe=False,
        runner=RunnerConfig(workers=0),
    )
    res = headstart(tiny_base, digits_permuted, cfg, out=tmp_path)
    assert [(b["n"], b["steps"]) for b in res["budgets"]] == [(60, 3), (60, 30)]
    for b in res["budgets"]:
        scratch = next(r for r in b["reference_runs"] if r["attacker"] == "scratch:adam@0.001")
        assert scratch["details"]["steps"] == b["steps"]
        cnn = next(r for r in b["reference_runs"] if r["attacker"] == "classical:cnn")
        assert cnn["details"]["steps"] == b["steps"]
    assert (tmp_path / "n60-s3" / "runs.jsonl").is_file() and (tmp_path / "n60-s30" / "runs.jsonl").is_file()


@pytest.fixture(scope="module")
def tiny_base_dir(tiny_base, tmp_path_factory):
    from trainlock.io.artifacts import save

    d = tmp_path_factory.mktemp("hs") / "base"
    save(tiny_base, d, {"task": "digits"})
    return d


@pytest.mark.parametrize(
    "flags,msg",
    [
        (["--budgets", "0"], "budgets"),
        (["--budgets", "100000"], "exceed"),
        (["--references", "nope"], "--plugin"),
        (["--lrs", "-1"], "lrs"),
    ],
)
def test_bad_input_exits_2_before_work(flags, msg, tiny_base_dir, tmp_path, capsys):
    assert main(["headstart", str(tiny_base_dir), "--task", "digits", "--out", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err
    assert not (tmp_path / "o" / "headstart.json").exists()


def test_reference_runs_are_computed_once_per_task_and_budget(digits):
    """The trials of a tune study and the rows of a lock table share their references: one run per process."""
    from dataclasses import dataclass

    from trainlock.attacks.references import REFERENCES, ReferenceRun, ReferenceTarget, register_reference
    from trainlock.red_team.uplift import reference_runs

    calls = []
    if "test-counting" not in REFERENCES:

        @register_reference("test-counting")
        @dataclass
        class Counting:
            def __call__(self, target):
                calls.append(target.steps)
                return [ReferenceRun("test-counting", accuracy=0.5)]

    first = reference_runs(ReferenceTarget(digits, steps=7), ("test-counting",))
    again = reference_runs(ReferenceTarget(digits, steps=7), ("test-counting",))
    other = reference_runs(ReferenceTarget(digits, steps=8), ("test-counting",))  # another budget runs again
    assert first == again == other and calls == [7, 8]


def test_the_references_on_disk_are_kept_per_step_budget(digits, tmp_path, monkeypatch):
    """A rerun into the same directory at another --steps trained the references again (it reused the first
    budget's before); the same budget reads them back; an older file keyed by the attacker alone is not trusted."""
    import json

    from trainlock.attacks.references import ReferenceRun, ReferenceTarget
    from trainlock.red_team import uplift

    calls = []

    def fake(name, target):
        calls.append(target.steps)
        return [ReferenceRun(name, accuracy=target.steps / 100)]

    monkeypatch.setattr(uplift, "run_reference", fake)
    monkeypatch.setattr(uplift, "_MEMO", {})
    (tmp_path / uplift.REFERENCES_FILE).write_text(json.dumps({"test-disk": [{"attacker": "x", "accuracy": 0.99}]}))
    a = uplift.reference_runs(ReferenceTarget(digits, steps=5), ("test-disk",), tmp_path)
    uplift._MEMO.clear()  # a new process: only the file remembers
    b = uplift.reference_runs(ReferenceTarget(digits, steps=10), ("test-disk",), tmp_path)
    uplift._MEMO.clear()
    c = uplift.reference_runs(ReferenceTarget(digits, steps=5), ("test-disk",), tmp_path)
    assert [r["accuracy"] for r in (a[0], b[0], c[0])] == [0.05, 0.1, 0.05] and calls == [5, 10]
    assert sorted(json.loads((tmp_path / uplift.REFERENCES_FILE).read_text())) == [
        "test-disk @ 10 steps, seed 0",
        "test-disk @ 5 steps, seed 0",
    ]


def test_references_read_back_from_disk_serve_the_next_directory_in_the_process(digits, tmp_path, monkeypatch):
    """A resumed lock table reads the base's references from its directory; its new rows (other directories,
    the same task, budget and seed) trained the references again until the file's runs went into the memo."""
    from trainlock.attacks.references import ReferenceRun, ReferenceTarget
    from trainlock.red_team import uplift

    calls = []

    def fake(name, target):
        calls.append(target.steps)
        return [ReferenceRun(name, accuracy=0.42)]

    monkeypatch.setattr(uplift, "run_reference", fake)
    monkeypatch.setattr(uplift, "_MEMO", {})
    first, resumed, new = tmp_path / "none", tmp_path / "row-a", tmp_path / "row-b"
    uplift.reference_runs(ReferenceTarget(digits, steps=5), ("test-disk",), first)
    uplift._MEMO.clear()  # a new process: only the file remembers
    again = uplift.reference_runs(ReferenceTarget(digits, steps=5), ("test-disk",), first)
    row = uplift.reference_runs(ReferenceTarget(digits, steps=5), ("test-disk",), resumed)
    other = uplift.reference_runs(ReferenceTarget(digits, steps=6), ("test-disk",), new)  # another budget: trains
    assert calls == [5, 6] and again == row and row[0]["accuracy"] == 0.42 and other[0]["accuracy"] == 0.42
    assert (resumed / uplift.REFERENCES_FILE).is_file()  # the new row's directory records them too
