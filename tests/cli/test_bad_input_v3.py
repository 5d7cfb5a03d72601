"""Issue 24's numbers, structured flags, data and vague errors: every case the battery found, kept. A bad
value exits 2 with one line naming the flag or file, before any work; a diverged run says so; every data
loader refuses one-class and absurd labels alike; a task from `tl.tasks.get` cannot poison the cache."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest

import trainlock as tl
from trainlock.cli import main
from trainlock.tasks import TaskDataError


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    return tiny_model_dir


@pytest.fixture
def world(base, tmp_path):
    shutil.copytree(base, tmp_path / "base")
    x = np.random.default_rng(0).random((40, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "one.npz", x_train=x, y_train=np.zeros(40, np.int64), x_test=x, y_test=np.zeros(40, np.int64))
    (tmp_path / "not.tar.gz").write_text("not a tarball")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "table.json").write_text("[]")
    return tmp_path


def _main(argv, world, capsys):
    argv = [a.replace("W/", f"{world}/") for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    return code, out, err


def _refused(argv, world, capsys):
    code, _out, err = _main(argv, world, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (argv, code, err)
    assert len([line for line in lines if "error:" in line]) == 1 and "error:" in lines[-1], err
    return lines[-1]


TRAIN = ["train", "--task", "digits", "--model", "mlp", "--max-steps", "2", "--out", "W/new"]


@pytest.mark.parametrize(
    "argv, says",
    [
        (["eval", "W/base", "--test-samples", "-359"], "--test-samples: must be an integer >= 1, got '-359'"),
        (["eval", "W/base", "--test-samples", "0"], "--test-samples: must be an integer >= 1"),
        (["diagnose", "W/base", "--samples", "-5"], "--samples: must be an integer >= 1"),
        (["diagnose", "W/base", "--samples", "0"], "--samples: must be an integer >= 1"),
        (["compact", "W/base", "--batch-size", "0"], "--batch-size: must be an integer >= 1"),
        (["compact", "W/base", "--lambdas", "inf"], "--lambdas: must be a finite number > 0"),
        (["compact", "W/base", "--lambdas", "nan"], "--lambdas: must be a finite number > 0"),
        (["attack", "W/base", "--task", "digits", "--scratch-lrs", "-1"], "--scratch-lrs: must be a finite number > 0"),
        (["train", "--task", "digits", "--model", "minilm-l6", "--out", "W/t", "--max-length", "0"], "--max-length"),
        (["lock", "W/base", "--out", "W/new", "--lr", "nan"], "argument --lr: must be a finite number"),
        (["lock", "W/base", "--out", "W/new", "--lr", "0"], "--lr: loop: lr must be a finite number > 0"),
        (["relearn", "W/base", "--lock-lr", "-1"], "--lock-lr: loop: lr must be"),
        (["lock", "W/base", "--out", "W/new", "--include", "("], "--include: specdef: include is not a valid regular"),
        (["lock", "W/base", "--out", "W/new", "--exclude", "[a-"], "exclude is not a valid regular expression"),
        (
            ["tune", "W/base", "--attack-task", "digits", "--utility-floor", "-1"],
            "--utility-floor: tune: utility_floor",
        ),
        (["tune", "W/base", "--attack-task", "digits", "--seed", "-1"], "--seed: tune: seed must be an integer >= 0"),
        (["locks", "--run", "W/base", "--specs", "{}", "--attack-tasks", "digits", "--bypass-margin", "2"], "--bypass"),
        ([*TRAIN, "--model-kwargs", '{"hidden": "64"}'], "--model-kwargs: model 'mlp': hidden must be a list of integ"),
        ([*TRAIN, "--model-kwargs", '{"hidden": [8, "a"]}'], "hidden must be a list of integers"),
        ([*TRAIN, "--model-kwargs", '{"activation": 3}'], "activation must be a string"),
        ([*TRAIN, "--model-kwargs", '{"num_classes": 3}'], "--model-kwargs: num_classes comes from the task"),
        ([*TRAIN, "--model-kwargs", '{"input_shape": [64]}'], "--model-kwargs: input_shape comes from the task"),
        ([*TRAIN, "--model-kwargs", '{"hidden": [8], '], "--model-kwargs is not valid JSON"),
        (["locks", "--table", "W/t"], "--table: W/t/table.json is not a lock table"),
        (["locks", "--run", "W/base", "--specs", "W/missing.json", "--attack-tasks", "digits"], "--specs: no file"),
        (["locks", "--run", "W/base", "--specs", '{"a": ', "--attack-tasks", "digits"], "--specs: inline JSON is not"),
        (["lock", "W/base", "--out", "W/new", "--spec", "W/missing.json"], "lock spec file"),
        (["fetch", "bigbench", "--sdist", "W/not.tar.gz"], "--sdist: W/not.tar.gz is not a readable tar archive"),
        (["keygen", "--out", "W/not.tar.gz"], "--out W/not.tar.gz: exists and is not a directory"),
        (["train", "--task", "npz:W/one.npz", "--model", "mlp", "--out", "W/new"], "hold one class only"),
    ],
)
def test_refused_with_one_line_naming_the_flag(argv, says, world, capsys, monkeypatch):
    monkeypatch.setenv("TRAINLOCK_DATA", str(world / "data"))  # fetch writes nowhere else
    line = _refused(argv, world, capsys)
    assert says.replace("W/", f"{world}/") in line, line
    assert not (world / "new").exists()  # refused before any work


def test_parser_refusals_are_one_line(world, capsys):
    _code, _out, err = _main(["eval", "W/base", "--test-samples", "abc"], world, capsys)
    assert err.strip().count("\n") == 0 and "--test-samples" in err and "usage:" not in err


def test_compact_reports_divergence_as_divergence(world, capsys):
    code, out, _err = _main(["compact", "W/base", "--lambdas", "0.1", "--steps", "20", "--lr", "1e6"], world, capsys)
    assert code == 0
    row = next(line for line in out.splitlines() if line.strip().startswith("0.1"))
    assert "DIVERGED" in row and " yes " not in row
    assert "the run diverged" in out


def test_a_diverged_lock_is_refused_not_certified(world, capsys):
    argv = ["lock", "W/base", "--out", "W/new", "--max-steps", "2", "--lr", "1e30", "--train-samples", "64"]
    line = _refused([*argv, "--test-samples", "64"], world, capsys)
    assert "diverged" in line and "not finite" in line and not (world / "new").exists()


def test_a_diverged_attack_says_so(world, capsys):
    argv = ["attack", "W/base", "--task", "digits", "--max-steps", "2", "--no-scratch", "--references", "--lr", "1e30"]
    code, _out, err = _main(argv, world, capsys)
    assert code == 0 and "diverged" in err


def _point_optuna_here(monkeypatch):
    """Optuna's log handler (and colorlog's formatter) hold the stderr of the test that imported Optuna first;
    point them at this test's captured stderr (call it inside the test, once capture is running)."""
    import sys

    optuna = pytest.importorskip("optuna")
    handler = optuna.logging._default_handler
    if handler is not None:
        monkeypatch.setattr(handler, "stream", sys.stderr)
        if hasattr(handler.formatter, "stream"):
            monkeypatch.setattr(handler.formatter, "stream", sys.stderr)


def _tune(world, *extra):
    return [
        *["tune", "W/base", "--attack-task", "digits", "--trials", "1", "--budget", "3", "--steps", "2"],
        *["--out", "W/tune", "--train-samples", "64", "--test-samples", "64", *extra],
    ]


def test_tune_with_no_finished_trial_says_so_and_claims_no_plot(world, capsys, monkeypatch):
    import trainlock.tune.study as study

    monkeypatch.setattr(study, "redteam", lambda *a, **k: {"uplift": None})  # every trial pruned
    _point_optuna_here(monkeypatch)
    code, out, _err = _main(_tune(world), world, capsys)
    assert code == 1 and "0 trials finished" in out and "raise --budget" in out
    assert "pareto.png" not in out.replace("pareto.json only", "") and not (world / "tune" / "pareto.png").exists()


def test_ctrl_c_in_tune_is_one_line_and_130(world, capsys, monkeypatch):
    import trainlock.tune.study as study

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(study, "redteam", interrupted)
    _point_optuna_here(monkeypatch)
    code, _out, err = _main(_tune(world), world, capsys)
    assert code == 130 and err.strip().splitlines()[-1] == "interrupted"
    assert "KeyboardInterrupt" not in err and "failed with value" not in err


def test_report_task_guard_compares_resolved_paths(world, capsys, monkeypatch):
    x = np.random.default_rng(0).random((40, 1, 8, 8)).astype(np.float32)
    y = np.arange(40) % 10
    np.savez(world / "x.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    argv = _tune(world, "--report-tasks", f"npz:{world}/./x.npz")
    argv[argv.index("digits")] = f"npz:{world}/x.npz"
    _point_optuna_here(monkeypatch)
    assert "also a report task" in _refused(argv, world, capsys)


# ---------------------------------------------------------------- data: every loader alike


def _idx(path, arr, code):
    path.write_bytes(struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


def _write_all(d, y):
    """The same labels as npz:, idx:, csv: and jsonl: data."""
    x = (np.random.default_rng(0).random((len(y), 8, 8)) * 255).astype(np.uint8)
    np.savez(d / "t.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    (d / "idx").mkdir()
    for split in ("train", "t10k"):
        _idx(d / "idx" / f"{split}-images-idx3-ubyte", x, 0x08)
        _idx(d / "idx" / f"{split}-labels-idx1-ubyte", y.astype(">i4"), 0x0C)
    names = [f"npz:{d}/t.npz", f"csv:{d}/t.csv", f"jsonl:{d}/t.jsonl"]
    if y.max() < 2**31:  # IDX labels are 32-bit at most
        names.append(f"idx:{d}/idx")
    rows = [{"text": f"word{i}", "label": int(v)} for i, v in enumerate(y)]
    (d / "t.csv").write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows))
    (d / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return names


@pytest.mark.parametrize(
    "labels, says",
    [
        (np.zeros(20, np.int64), "the training labels hold one class only"),
        (np.array([0, 2**40] * 10), "go up to 1099511627776"),
        (np.array([0, 200_000] * 10), "go up to 200000"),
    ],
)
def test_every_loader_refuses_one_class_and_absurd_labels_alike(labels, says, tmp_path):
    for name in _write_all(tmp_path, labels):
        with pytest.raises(TaskDataError, match=says):
            tl.tasks.get(name)


def test_negative_labels_refused_by_every_loader(tmp_path):
    x = np.zeros((4, 8, 8), np.float32)
    np.savez(tmp_path / "n.npz", x_train=x, y_train=np.array([-1, 1, 0, 1]), x_test=x, y_test=np.array([0, 1, 0, 1]))
    (tmp_path / "n.jsonl").write_text("\n".join(json.dumps({"text": "a", "label": v}) for v in (-1, 1, 0, 1)))
    for name in (f"npz:{tmp_path}/n.npz", f"jsonl:{tmp_path}/n.jsonl"):
        with pytest.raises(TaskDataError, match=r"negative|>= 0"):
            tl.tasks.get(name)


def test_a_bom_in_a_csv_header_or_spec_file_is_not_part_of_it(tmp_path):
    rows = "".join(f"word{i},{i % 2}\n" for i in range(20))
    (tmp_path / "b.csv").write_text("\ufefftext,label\n" + rows, encoding="utf-8")
    assert tl.tasks.get(f"csv:{tmp_path}/b.csv").num_classes == 2
    (tmp_path / "s.json").write_text('\ufeff{"type": "specdef"}', encoding="utf-8")
    assert tl.api.as_lock(str(tmp_path / "s.json")).name == "specdef"


def test_a_task_from_get_cannot_poison_the_cache():
    first = tl.tasks.get("digits")
    total = float(first.x_train.sum())
    first.x_train.mul_(0)
    first.y_train.fill_(3)
    again = tl.tasks.get("digits")
    assert float(again.x_train.sum()) == total and len(set(again.y_train.tolist())) == 10


def test_python_api_refuses_none_clearly():
    with pytest.raises(ValueError, match=r"lock needs a torch\.nn\.Module"):
        tl.lock(None)


def test_model_kwargs_are_checked_against_the_builder():
    with pytest.raises(ValueError, match="hidden must be a list of integers, got '64'"):
        tl.models.build("mlp", input_shape=(1, 8, 8), num_classes=10, hidden="64")
    with pytest.raises(ValueError, match="dim must be an integer"):
        tl.models.build("transformer", input_shape=(1, 8, 8), num_classes=10, dim="64")
    assert tl.models.build("cnn", input_shape=(1, 8, 8), num_classes=np.int64(10), hidden=8) is not None


def test_max_length_beyond_the_models_positions_is_refused():
    pytest.importorskip("transformers")
    from hf_tiny import tiny
    from trainlock.models.hf import HFClassifier

    m = tiny("bert")  # 32 positions
    with pytest.raises(ValueError, match=r"--max-length\) 100000 is more than this model's 32 positions"):
        HFClassifier(m.model, m.tokenizer, 100000)


def test_hf_dir_without_config_json_says_so(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(ValueError, match=r"no config\.json"):
        tl.models.build(f"hf:{tmp_path}")
