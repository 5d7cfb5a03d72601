"""Issue 24, part "claims never laundered, every state bound to its model": a derived model refuses an input
whose record or files fail verification; a Hugging Face model's config and tokenizer are bound; checkpoints,
tune studies and a lock's recorded base are bound to the model and flags they were made with."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import trainlock as tl
from trainlock.certify.verify import verify
from trainlock.cli import main
from trainlock.cli.main import build_parser
from trainlock.io.artifacts import META, WEIGHTS, ArtifactError, BindingError, header_metadata, load
from trainlock.io.hashing import file_sha256


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_base):
    """The tiny base saved, and a SpecDef lock of it made by the CLI (a few steps)."""
    root = tmp_path_factory.mktemp("v3")
    base = tl.save(tiny_base, root / "base", {"task": "digits", "metrics": {"accuracy": 0.9}})
    argv = ["lock", str(base), "--out", str(root / "locked"), "--max-steps", "3", "--test-samples", "50"]
    assert main(argv) == 0
    return root


@pytest.fixture
def world(saved, tmp_path):
    for name in ("base", "locked"):
        shutil.copytree(saved / name, tmp_path / name)
    return tmp_path


def _edit(d, fn):
    meta = json.loads((d / META).read_text())
    fn(meta)
    (d / META).write_text(json.dumps(meta, indent=2))


def _cli(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out + out.err


def _one_error(text):
    lines = [line for line in text.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


# --- derived models never launder ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda m: m["metrics"].update(accuracy=0.999), "metrics.accuracy"),
        (lambda m: m["architecture"]["kwargs"].update(activation="tanh"), "architecture.kwargs"),
        (lambda m: m["certificates"][0].update(required=-1.0), "certificates"),
    ],
)
def test_release_refuses_an_edited_record(world, capsys, edit, field):
    _edit(world / "locked", edit)
    code, text = _cli(["release", world / "locked", "--out", world / "pub"], capsys)
    assert code == 1 and field in _one_error(text)
    assert not (world / "pub" / META).exists()


def test_lock_refuses_a_hand_added_field(world, capsys):
    _edit(world / "base", lambda m: m.update(audited_by="someone"))
    code, text = _cli(["lock", world / "base", "--out", world / "l2", "--max-steps", "1"], capsys)
    assert code == 1 and "audited_by" in _one_error(text)
    assert not (world / "l2" / META).exists()


def test_attack_save_refuses_an_edited_input_even_with_unverified(world, capsys):
    _edit(world / "locked", lambda m: m["metrics"].update(accuracy=0.5))
    argv = ["attack", world / "locked", "--task", "digits", "--max-steps", "1", "--save", world / "a"]
    code, text = _cli(argv, capsys)
    assert code == 1 and "metrics.accuracy" in _one_error(text)
    code, text = _cli([*argv, "--unverified"], capsys)
    assert code == 2 and "--unverified cannot be used with --save" in _one_error(text)
    assert not (world / "a").exists()


def test_sign_refuses_an_edited_record(world, capsys):
    pytest.importorskip("model_signing")
    assert main(["keygen", "--out", str(world / "keys")]) == 0
    _edit(world / "locked", lambda m: m["metrics"].update(accuracy=0.999))
    code, text = _cli(["sign", world / "locked", "--key", world / "keys" / "private.pem"], capsys)
    assert code == 1 and "metrics.accuracy" in _one_error(text)
    assert not (world / "locked" / "model.sig").exists()


def test_a_read_only_command_takes_unverified_with_a_warning(world, capsys):
    _edit(world / "base", lambda m: m["metrics"].update(accuracy=0.999))
    code, text = _cli(["eval", world / "base"], capsys)
    assert code == 1 and "metrics.accuracy" in _one_error(text)
    code, text = _cli(["eval", world / "base", "--unverified"], capsys)
    assert code == 0 and "UNVERIFIED" in text and "metrics.accuracy" in text


def test_load_refuses_a_deleted_weights_hash_and_an_edited_activation(world):
    d = world / "base"
    _edit(d, lambda m: m.pop("weights_sha256"))
    with pytest.raises(BindingError, match="records no weights_sha256"):
        load(d)
    d = world / "locked"
    _edit(d, lambda m: m["architecture"]["kwargs"].update(activation="tanh"))
    with pytest.raises(BindingError, match=r"architecture.kwargs"):
        load(d)
    model, _ = load(d, unverified=True)  # the caller's choice, with a warning
    assert isinstance(model, torch.nn.Module)


def test_a_legacy_directory_says_how_to_rebind(world):
    """A directory of an older trainlock (no record hash in the header): refused with how to re-bind it."""
    d = world / "base"
    tensors = load_file(str(d / WEIGHTS))
    header = {k: v for k, v in header_metadata(json.loads((d / META).read_text())).items() if "record" not in k}
    save_file(tensors, str(d / WEIGHTS), metadata=header)
    _edit(d, lambda m: m.update(weights_sha256=file_sha256(d / WEIGHTS)))
    with pytest.raises(BindingError, match=r"before records were bound.*unverified=True.*trainlock.save"):
        load(d)
    model, meta = load(d, unverified=True)
    tl.save(model, d, meta)  # the re-bind the message gives
    load(d)
    assert verify(d).ok


# --- Hugging Face files are bound ------------------------------------------------------------------------


@pytest.fixture
def hf_dir(tmp_path):
    pytest.importorskip("transformers")
    from hf_tiny import tiny

    return tl.save(tiny("bert"), tmp_path / "hf", {"task": "toy"})


def test_hf_files_are_bound(hf_dir):
    meta = json.loads((hf_dir / META).read_text())
    assert {"config.json", "tokenizer.json"} <= set(meta["files"])
    load(hf_dir)
    assert verify(hf_dir).ok


def test_hf_deleted_tokenizer_is_refused(hf_dir):
    for f in hf_dir.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(BindingError, match=r"tokenizer.*missing"):
        load(hf_dir)
    report = verify(hf_dir)
    assert not report.ok and any("tokenizer.json is missing" in r.reason for r in report.failures)


def test_hf_edited_config_is_refused(hf_dir):
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg["hidden_act"] = "relu"
    (hf_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BindingError, match=r"config.json was changed"):
        load(hf_dir)
    assert any(r.check == "files" for r in verify(hf_dir).failures)


def test_hf_added_file_is_refused(hf_dir):
    (hf_dir / "special_tokens_map.json").write_text('{"unk_token": "good"}')
    with pytest.raises(BindingError, match=r"special_tokens_map.json was added"):
        load(hf_dir)


def test_hf_directory_saved_before_file_binding(hf_dir):
    """An older directory: no meta["files"], but its record bound. Refused with the re-bind hint; loads unverified."""
    meta = json.loads((hf_dir / META).read_text())
    meta.pop("files")
    meta.pop("weights_sha256")
    save_file(load_file(str(hf_dir / WEIGHTS)), str(hf_dir / WEIGHTS), metadata=header_metadata(meta))
    meta["weights_sha256"] = file_sha256(hf_dir / WEIGHTS)
    (hf_dir / META).write_text(json.dumps(meta))
    with pytest.raises(BindingError, match=r"not bound.*before they were bound.*unverified=True"):
        load(hf_dir)
    model, meta = load(hf_dir, unverified=True)
    tl.save(model, hf_dir, meta)
    load(hf_dir)


# --- state bound to its model ------------------------------------------------------------------------------


def _plant_checkpoint(argv, out):
    """The checkpoint a run of `argv` would leave (only its identity matters to the check under test)."""
    from trainlock.cli.common import run_identity
    from trainlock.train.checkpoint import save_state

    args = build_parser(only=[argv[0]]).parse_args([str(a) for a in argv])
    path = out.parent / f".{out.name}.checkpoint.safetensors"
    save_state(path, {"steps": 1}, identity=run_identity(args))
    return path


@pytest.mark.parametrize(
    "first, then, says",
    [
        (["--alpha", "0.5"], ["--alpha", "0.9"], "--alpha: 0.5 in the checkpoint, 0.9 now"),
        ([], ["--top-k", "2"], "--top-k"),
    ],
)
def test_lock_resume_with_other_flags_is_refused(world, capsys, first, then, says):
    argv = ["lock", world / "base", "--out", world / "l3", "--max-steps", "2"]
    _plant_checkpoint([*argv, *first], world / "l3")
    code, text = _cli([*argv, *then, "--resume", "--checkpoint-every", "1"], capsys)
    assert code == 2 and says in _one_error(text)
    assert not (world / "l3").exists()


def test_lock_resume_on_another_base_is_refused(world, capsys):
    _plant_checkpoint(["lock", world / "base", "--out", world / "l3"], world / "l3")
    code, text = _cli(["lock", world / "locked", "--out", world / "l3", "--resume"], capsys)
    assert code == 2 and "MODEL_DIR weights" in _one_error(text)


def test_train_resume_with_other_model_kwargs_is_refused(tmp_path, capsys):
    argv = ["train", "--task", "digits", "--model", "mlp", "--out", tmp_path / "t", "--max-steps", "2"]
    _plant_checkpoint([*argv, "--model-kwargs", '{"hidden": [8]}'], tmp_path / "t")
    code, text = _cli([*argv, "--model-kwargs", '{"hidden": [16]}', "--resume"], capsys)
    assert code == 2 and "--model-kwargs" in _one_error(text)


def test_a_checkpoint_without_identity_is_refused(tmp_path, capsys):
    from trainlock.train.checkpoint import save_state

    save_state(tmp_path / ".t.checkpoint.safetensors", {"steps": 1})
    argv = ["train", "--task", "digits", "--model", "mlp", "--out", tmp_path / "t", "--resume"]
    code, text = _cli(argv, capsys)
    assert code == 2 and "without its run's identity" in _one_error(text)


def test_the_lock_records_its_base_by_weights(saved):
    meta = json.loads((saved / "locked" / META).read_text())
    base = json.loads((saved / "base" / META).read_text())
    assert meta["base_state_sha256"] == base["hashes"]["state"]


@pytest.mark.parametrize("command", ["attack", "redteam"])
def test_base_that_is_not_the_locks_base_is_refused_before_work(world, capsys, digits, command):
    other = tl.models.build("cnn", input_shape=digits.input_shape, num_classes=10)
    tl.save(other, world / "cnn", {"task": "digits"})
    tail = ["--task", "digits", "--json", world / "r.json"]
    tail += ["--out", world / "rt"] if command == "redteam" else []
    for base, says in (
        (world / "cnn", "not the base this lock was made from"),
        (world / "locked", "is the model itself"),
        (world / "nonexist", "not a model directory"),
    ):
        code, text = _cli([command, world / "locked", *tail, "--base", base], capsys)
        assert code == 2 and says in _one_error(text), text
        assert not (world / "r.json").exists() and not (world / "rt" / "results.jsonl").exists()


def test_base_of_another_architecture_is_refused_for_a_lock_that_recorded_none(world, digits):
    from trainlock.cli.common import load_base

    other = tl.save(tl.models.build("cnn", input_shape=digits.input_shape, num_classes=10), world / "cnn", {})
    meta = json.loads((world / "locked" / META).read_text())
    meta.pop("base_state_sha256")
    with pytest.raises(ValueError, match=r"is a cnn .* not its base"):
        load_base(other, world / "locked", meta)
    assert load_base(world / "base", world / "locked", meta)[0] is not None


def test_a_tune_study_of_another_base_is_refused(tmp_path, tiny_base, digits):
    from trainlock.tune import TuneConfig
    from trainlock.tune.study import _claim_study

    cfg = TuneConfig(lock="specdef")
    _claim_study(tmp_path, tiny_base, digits, digits, cfg)
    _claim_study(tmp_path, tiny_base, digits, digits, cfg)  # the same base: resumed
    other = tl.models.build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[32])
    with pytest.raises(ValueError, match="tune study of another base model"):
        _claim_study(tmp_path, other, digits, digits, cfg)
    with pytest.raises(ValueError, match="--seed"):
        _claim_study(tmp_path, tiny_base, digits, digits, TuneConfig(lock="specdef", seed=3))
    (tmp_path / "study.json").unlink()
    (tmp_path / "trial-0").mkdir()
    with pytest.raises(ValueError, match="without a record of which base"):
        _claim_study(tmp_path, tiny_base, digits, digits, cfg)


def test_artifact_error_still_names_a_corrupt_weights_file(world):
    (world / "base" / WEIGHTS).write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="SHA-256"):
        load(world / "base")
