"""Signed releases: keygen, sign, verify --public-key; tampering with weights, json, or an added file is refused."""

import json
import shutil

import pytest
import torch

import trainlock as tl
from trainlock.certify.verify import verify
from trainlock.cli import main
from trainlock.io.signing import SIGNED_INFO, SigningError, fingerprint, keygen, sign, verify_signature


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return keygen(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def signed(tmp_path_factory, keys):
    torch.manual_seed(0)
    d = tl.save(
        tl.models.build("mlp", input_shape=[1, 8, 8], num_classes=10, hidden=[8]),
        tmp_path_factory.mktemp("m") / "model",
        {"task": "digits"},
    )
    sign(d, keys[0])
    return d


def _copy(src, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(src, d)
    return d


def test_signed_directory_verifies_with_signer_and_time(signed, keys):
    rep = verify_signature(signed, keys[1])
    assert rep.ok, rep.reason
    assert rep.signer == fingerprint(keys[1].read_bytes()) and rep.signed_at.startswith("20")
    info = json.loads((signed / SIGNED_INFO).read_text())
    assert set(info["files"]) == {"model.safetensors", "trainlock.json"}
    report = verify(signed, public_key=keys[1])
    assert report.ok and report.rows[-1].check == "signature"


@pytest.mark.parametrize(
    "tamper, kind, name",
    [
        (
            lambda d: d.joinpath("model.safetensors").write_bytes(
                d.joinpath("model.safetensors").read_bytes()[:-4] + b"\0\0\0\0"
            ),
            "changed",
            "model.safetensors",
        ),
        (
            lambda d: d.joinpath("trainlock.json").write_text(
                d.joinpath("trainlock.json").read_text().replace("digits", "mnist")
            ),
            "changed",
            "trainlock.json",
        ),
        (lambda d: d.joinpath("extra.bin").write_bytes(b"payload"), "added", "extra.bin"),
        (lambda d: d.joinpath("trainlock.json").unlink(), "removed", "trainlock.json"),
    ],
)
def test_each_tampering_is_refused_and_named(signed, keys, tmp_path, tamper, kind, name):
    d = _copy(signed, tmp_path)
    tamper(d)
    rep = verify_signature(d, keys[1])
    assert not rep.ok and name in getattr(rep, kind), rep
    assert f"{kind} {name}" in rep.reason


def test_another_key_is_refused(signed, tmp_path):
    _, other = keygen(tmp_path / "other")
    rep = verify_signature(signed, other)
    assert not rep.ok and "another key" in rep.reason


def test_unsigned_directory_and_missing_key(signed, keys, tmp_path):
    d = _copy(signed, tmp_path)
    (d / "model.sig").unlink()
    assert "is not signed" in verify_signature(d, keys[1]).reason
    with pytest.raises(SigningError, match="no such key file"):
        sign(d, tmp_path / "nope.pem")
    with pytest.raises(SigningError, match="refusing to replace"):
        keygen(keys[0].parent)


def test_cli_keygen_sign_verify(tmp_path, capsys):
    torch.manual_seed(0)
    d = tl.save(
        tl.models.build("mlp", input_shape=[1, 8, 8], num_classes=10, hidden=[8]), tmp_path / "m", {"task": "digits"}
    )
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 0
    assert (tmp_path / "k" / "private.pem").stat().st_mode & 0o777 == 0o600
    assert main(["sign", str(d), "--key", str(tmp_path / "k" / "private.pem")]) == 0
    assert main(["verify", str(d), "--public-key", str(tmp_path / "k" / "public.pem")]) == 0
    (d / "extra.txt").write_text("x")
    assert main(["verify", str(d), "--public-key", str(tmp_path / "k" / "public.pem")]) == 1
    assert "added extra.txt" in capsys.readouterr().out
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 2  # never replaces a key silently
