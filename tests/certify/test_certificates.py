"""verify(): any change to the weights or to trainlock.json is caught, with a row that says where."""

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import trainlock as tl
from trainlock.certify.verify import verify
from trainlock.cli.main import main
from trainlock.config import option
from trainlock.io.artifacts import META, WEIGHTS, ArtifactError, _sha256, read_header, save
from trainlock.io.hashing import state_hashes, tensor_sha256
from trainlock.locks.base import BaseLock, Certificate, Locked, NoRecord, RecordedLock, register_lock
from trainlock.locks.frozen import FrozenConfig, FrozenLock
from trainlock.locks.spectral_cap import SpectralCapConfig, SpectralCapLock, sigma_max
from trainlock.train import clone_model


@dataclass
class ToyMaxAbsConfig:
    cap: float = option(10.0, "the claim: max |w| over every parameter <= cap")


@register_lock("toy-max-abs", ToyMaxAbsConfig, example={"cap": 1e6})
class ToyMaxAbsLock(BaseLock):
    """A toy lock for these tests: max |w| over every parameter <= cap (nothing recorded: NoRecord)."""

    def apply(self, model, retain=None, *, progress=False, checkpoint=None) -> Locked:
        return Locked(clone_model(model), NoRecord())

    def certify(self, model, record) -> list[Certificate]:
        measured = max(float(p.detach().abs().max()) for p in model.parameters())
        return [
            Certificate(
                lock=self.name,
                invariant="max |w| over all parameters",
                measured=measured,
                required=self.cfg.cap,
                relation="<=",
                proof_of_gap="toy",
                preservation="toy",
                threat_model="training-time",
                adversary_can_remove=True,
                removal="toy",
                method="max of abs",
            )
        ]


def toy(cap: float) -> RecordedLock:
    return RecordedLock(ToyMaxAbsLock(ToyMaxAbsConfig(cap)), NoRecord())


def _lock_meta(recorded: RecordedLock, model) -> dict:
    """What `trainlock.lock` stores: the lock entry and its certificates on `model`."""
    return {"locks": [recorded.entry()], "certificates": [c.to_dict() for c in recorded.certify(model)]}


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return tl.models.build("mlp", input_shape=[8], num_classes=3, hidden=[4])


def _save_locked(model, path, cap: float = 10.0):
    return save(model, path, _lock_meta(toy(cap), model))


def _rewrite_weights(path: Path, tensors: dict, metadata: dict | None = None, like: Path | None = None) -> None:
    """Rewrite model.safetensors through safetensors, keeping the header metadata of `like` (default: its own)."""
    if metadata is None:
        with safe_open(str((like or path) / WEIGHTS), framework="pt") as f:
            metadata = f.metadata()
    save_file(tensors, str(path / WEIGHTS), metadata=metadata)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "m"
    _save_locked(_model(), path)
    return path


def _failed(report, check=None):
    return [r for r in report.rows if not r.holds and (check is None or r.check == check)]


# ----------------------------------------------------------------------------- untouched models


def test_untouched_model_verifies(saved):
    report = verify(saved)
    assert report.ok, report.table()
    checks = {r.check for r in report.rows}
    assert checks >= {"file", "tensor", "state", "header", "certificate", "lock"}
    lock_rows = [r for r in report.rows if r.check == "lock"]
    assert len(lock_rows) == 1 and lock_rows[0].subject == "toy-max-abs: max |w| over all parameters"
    assert "agrees with the stored certificate" in lock_rows[0].reason


def test_save_writes_hashes_and_header(saved):
    meta = json.loads((saved / META).read_text())
    tensors = load_file(str(saved / WEIGHTS))
    assert meta["hashes"] == state_hashes(tensors)
    assert set(meta["hashes"]["tensors"]) == set(tensors)
    header = read_header(saved)
    assert header["state_sha256"] == meta["hashes"]["state"]
    assert (
        header["trainlock_version"] == tl.__version__ and header["trainlock_format"] == "1" and header["format"] == "pt"
    )
    assert json.loads(header["certificates"]) == meta["certificates"]
    assert (
        json.loads(header["locks"]) == meta["locks"] == [{"type": "toy-max-abs", "config": {"cap": 10.0}, "record": {}}]
    )


def test_tensor_hash_sees_dtype_shape_and_sign_of_zero():
    t = torch.zeros(2, 3)
    h = tensor_sha256(t)
    assert h != tensor_sha256(t.reshape(3, 2))
    assert h != tensor_sha256(t.to(torch.int32))  # same bytes, other dtype
    assert h != tensor_sha256(-t)  # -0.0 has another bit pattern
    assert h == tensor_sha256(torch.zeros(3, 2).t())  # non-contiguous: hashed as its contiguous copy
    a = {"x": torch.ones(2), "y": torch.zeros(1)}
    assert state_hashes(a)["state"] == state_hashes(dict(reversed(list(a.items()))))["state"]
    assert state_hashes(a)["state"] != state_hashes({"x": torch.ones(2), "z": torch.zeros(1)})["state"]


# ----------------------------------------------------------------------------- one changed weight

_NAMES = sorted(_model().state_dict())
_SIZES = {k: v.numel() for k, v in _model().state_dict().items()}


def _changed(old: float, kind: str, rel: float) -> torch.Tensor:
    """A float32 value that differs from `old` in at least one bit."""
    o = torch.tensor(old, dtype=torch.float32)
    if kind == "flip":
        new = -o
    elif kind == "relative":
        new = o * (1 + rel) if old != 0 else torch.tensor(rel, dtype=torch.float32)
    else:
        new = o + rel
    if new.view(torch.int32) == o.view(torch.int32):  # 1e-7 relative can round back to old: one ulp then
        new = torch.nextafter(o, torch.tensor(math.inf))
    return new


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(_NAMES),
    where=st.floats(0, 1, exclude_max=True),
    kind=st.sampled_from(["flip", "relative", "absolute"]),
    rel=st.sampled_from([1e-7, -1e-7, 1e-6, 1e-3, -0.5, 2.0, 1e3]) | st.floats(-10, 10).filter(lambda v: v != 0),
)
def test_any_single_element_change_is_detected(saved, name, where, kind, rel):
    tensors = load_file(str(saved / WEIGHTS))
    flat = tensors[name].reshape(-1)
    i = int(where * _SIZES[name])
    flat[i] = _changed(float(flat[i]), kind, rel)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        shutil.copy(saved / META, d / META)  # trainlock.json kept as it was
        _rewrite_weights(d, tensors, like=saved)
        report = verify(d)
    assert not report.ok
    bad = _failed(report, "tensor")
    assert [r.subject for r in bad] == [name], report.table()
    assert f"tensor {name!r}" in bad[0].reason and "changed" in bad[0].reason
    assert {r.subject for r in _failed(report)} >= {WEIGHTS, name, "state_sha256"}


# ----------------------------------------------------------------------------- tampered trainlock.json


def _copy(saved, tmp_path) -> Path:
    d = tmp_path / "m"
    shutil.copytree(saved, d)
    return d


def _edit_json(path: Path, fn) -> None:
    meta = json.loads((path / META).read_text())
    fn(meta)
    (path / META).write_text(json.dumps(meta, indent=2))


def test_edited_certificate_number_is_caught_precisely(saved, tmp_path):
    d = _copy(saved, tmp_path)
    _edit_json(d, lambda m: m["certificates"][0].update(measured=0.123))
    report = verify(d)
    assert not report.ok
    bad = {(r.check, r.subject): r for r in _failed(report)}
    row = bad.pop(("header", "certificates"))
    assert "certificates[0].measured" in row.reason and "0.123" in row.reason
    assert "was edited after saving" in bad.pop(("record", "certificates")).reason  # the claim is bound
    (recert,) = bad.values()  # and re-measuring from the weights disagrees with the edited number
    assert recert.check == "lock" and "the stored certificate says 0.123" in recert.reason


def test_edited_tensor_hash_is_caught(saved, tmp_path):
    d = _copy(saved, tmp_path)
    _edit_json(d, lambda m: m["hashes"]["tensors"].update({"head.bias": "0" * 64}))
    report = verify(d)
    bad = {(r.check, r.subject): r for r in _failed(report)}
    assert set(bad) == {("tensor", "head.bias"), ("state", "hashes (json)"), ("record", "hashes.tensors")}
    assert "the hash list was edited" in bad["state", "hashes (json)"].reason


def test_edited_state_hash_is_caught(saved, tmp_path):
    d = _copy(saved, tmp_path)
    _edit_json(d, lambda m: m["hashes"].update(state="f" * 64))
    report = verify(d)
    subjects = {(r.check, r.subject) for r in _failed(report)}
    assert subjects == {
        ("state", "state_sha256"),
        ("state", "hashes (json)"),
        ("header", "state_sha256"),
        ("record", "hashes.state"),
    }
    header_row = next(r for r in report.rows if r.check == "header" and r.subject == "state_sha256")
    assert "trainlock.json says" in header_row.reason


def test_edited_lock_config_and_stored_holds_flag(saved, tmp_path):
    d = _copy(saved, tmp_path)
    _edit_json(d, lambda m: m["locks"][0]["config"].update(cap=1e-3))
    report = verify(d)
    bad = {(r.check, r.subject): r for r in _failed(report)}
    assert "locks[0].config.cap" in bad["header", "locks"].reason
    assert not bad["lock", "toy-max-abs: max |w| over all parameters"].holds  # re-certified: cap now fails

    d2 = _copy(saved, tmp_path / "b")
    _edit_json(d2, lambda m: m["certificates"][0].update(holds=False))
    (row, *rest) = [r for r in _failed(verify(d2)) if r.check == "certificate"]
    assert "stored holds=False" in row.reason and not rest


def test_consistent_forgery_is_caught_by_recertification(saved, tmp_path):
    """Edit the certificate in trainlock.json AND in the header: re-measuring from the weights still disagrees."""
    d = _copy(saved, tmp_path)
    _edit_json(d, lambda m: m["certificates"][0].update(measured=0.01))
    meta = json.loads((d / META).read_text())
    with safe_open(str(d / WEIGHTS), framework="pt") as f:
        header = f.metadata()
    header["certificates"] = json.dumps(meta["certificates"], sort_keys=True, separators=(",", ":"))
    _rewrite_weights(d, load_file(str(d / WEIGHTS)), header)
    _edit_json(d, lambda m: m.update(weights_sha256=_sha256(d / WEIGHTS)))
    report = verify(d)
    bad = {(r.check, r.subject): r for r in _failed(report)}
    assert set(bad) == {("lock", "toy-max-abs: max |w| over all parameters"), ("record", "certificates")}
    assert "the stored certificate says 0.01" in bad["lock", "toy-max-abs: max |w| over all parameters"].reason


def test_a_broken_lock_fails_verify(tmp_path):
    model = _model()
    path = _save_locked(model, tmp_path / "m", cap=0.01)  # the toy claim does not hold on these weights
    report = verify(path)
    assert {(r.check, r.holds) for r in report.rows if r.check in ("lock", "certificate")} == {
        ("lock", False),
        ("certificate", False),
    }
    assert "does NOT hold" in _failed(report, "lock")[0].reason


def test_unknown_lock_type_is_a_failed_row(saved, tmp_path):
    d = _copy(saved, tmp_path)
    meta = json.loads((d / META).read_text())
    meta["locks"] = [{"type": "no-such-lock", "config": {}}]
    model, _ = tl.load(saved)
    save(model, d, meta)  # consistent header and JSON; only the lock cannot be rebuilt
    report = verify(d)
    (row,) = _failed(report)
    assert row.check == "lock" and "no-such-lock" in row.reason


# ----------------------------------------------------------------------------- unreadable input


def test_unreadable_input_raises_artifact_error(saved, tmp_path):
    with pytest.raises(ArtifactError, match="not a model directory"):
        verify(tmp_path / "nope")
    d = _copy(saved, tmp_path)
    data = (d / WEIGHTS).read_bytes()
    (d / WEIGHTS).write_bytes(data[: len(data) - 7])
    with pytest.raises(ArtifactError, match="unreadable safetensors"):
        verify(d)
    (d / META).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        verify(d)
    d2 = _copy(saved, tmp_path / "b")
    (d2 / WEIGHTS).unlink()
    with pytest.raises(ArtifactError, match=r"missing model.safetensors"):
        verify(d2)


# ----------------------------------------------------------------------------- the real locks


def test_real_spectral_cap_lock_is_recertified(tmp_path):
    lock = RecordedLock(SpectralCapLock(SpectralCapConfig(max_sigma=0.5)), NoRecord())  # the cap records nothing
    locked = _model()  # projected by hand: certify reads the weights only (apply's hooks are not needed here)
    with torch.no_grad():
        for p in (locked.body[0].weight, locked.head.weight):
            p.mul_(0.5 / max(0.5, sigma_max(p)))
    path = save(locked, tmp_path / "m", _lock_meta(lock, locked))
    report = verify(path)
    assert report.ok, report.table()
    assert any(r.check == "lock" and r.subject.startswith("spectral-cap: ") for r in report.rows)

    tensors = load_file(str(path / WEIGHTS))
    tensors["head.weight"] = tensors["head.weight"] * 3  # sigma_max 3x above the cap
    _rewrite_weights(path, tensors)
    bad = {(r.check, r.subject.split(":")[0]) for r in _failed(verify(path))}
    assert {("tensor", "head.weight"), ("lock", "spectral-cap")} <= bad


def test_real_frozen_lock_is_recertified(tmp_path):
    lock = FrozenLock(FrozenConfig(names=("body",)))
    out = lock.apply(_model())
    path = save(out.model, tmp_path / "m", _lock_meta(RecordedLock(lock, out.record), out.model))
    assert verify(path).ok
    tensors = load_file(str(path / WEIGHTS))
    tensors["body.0.bias"][0] += 1e-3
    _rewrite_weights(path, tensors)
    lock_rows = _failed(verify(path), "lock")
    assert len(lock_rows) == 1 and lock_rows[0].subject.startswith("frozen: ")


# ----------------------------------------------------------------------------- CLI


def test_cli_verify_exit_codes(saved, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["verify", str(saved), "--json", str(out)]) == 0
    assert "all" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["ok"] is True and data["rows"]

    d = _copy(saved, tmp_path)
    tensors = load_file(str(d / WEIGHTS))
    tensors["head.bias"][1] *= -1
    _rewrite_weights(d, tensors)
    assert main(["verify", str(d)]) == 1
    printed = capsys.readouterr().out
    assert "FAIL" in printed and "head.bias" in printed

    assert main(["verify", str(tmp_path / "nope")]) == 2
    assert "not a model directory" in capsys.readouterr().err
    (d / META).write_text("[1, 2")
    assert main(["verify", str(d)]) == 2
