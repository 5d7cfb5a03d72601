"""Signed releases: an elliptic-curve signature over every file of a model directory, offline.

Signing and verifying go through the OpenSSF `model-signing` library (Apache-2.0), with its
elliptic-curve key signer, so no network is needed; its sigstore (keyless) flow stays available to
users who are online. `keygen` writes a P-256 key pair with `cryptography`.

`sign(model_dir, key)` first writes `trainlock.sig.json` (who signed: the SHA-256 fingerprint of the
public key; when; the package versions; every file with its SHA-256) into the directory, then signs
the whole directory into `model.sig`, so the signer and time are covered by the signature too.
`verify_signature(model_dir, public_key)` checks the signature against the key and every file, and
says which files were added, removed or changed since signing.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import atomic
from .._version import __version__

SIGNATURE = "model.sig"
SIGNED_INFO = "trainlock.sig.json"


class SigningError(ValueError):
    """A key, a signature or a directory that cannot be used as asked."""


def _model_signing():
    try:
        import model_signing
        import model_signing.signing
        import model_signing.verifying
    except ImportError as e:
        raise SigningError(
            f"signing needs the model-signing library ({e}); install it: pip install 'trainlock[sign]'"
        ) from None
    return model_signing


def _crypto():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return serialization, ec


def fingerprint(public_pem: bytes) -> str:
    """SHA-256 of the public key's DER encoding (what `model.sig` names as the key hint)."""
    serialization, _ = _crypto()
    try:
        key = serialization.load_pem_public_key(public_pem)
    except ValueError as e:
        raise SigningError(f"not a PEM public key ({e})") from None
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def keygen(out: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write `out/private.pem` (PKCS#8, mode 0600) and `out/public.pem` (a P-256 key pair)."""
    serialization, ec = _crypto()
    out = Path(out)
    private, public = out / "private.pem", out / "public.pem"
    existing = [p for p in (private, public) if p.exists()]
    if existing and not overwrite:
        raise SigningError(f"{existing[0]} exists; refusing to replace a key (pass --overwrite to do so)")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    out.mkdir(parents=True, exist_ok=True)
    with atomic.writing_file(private) as tmp:
        os.chmod(tmp, 0o600)  # before the key is in it: never readable by others, not even for a moment
        tmp.write_bytes(pem)
    atomic.write_bytes(
        public,
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )
    return private, public


def _public_from_private(key: Path) -> bytes:
    serialization, _ = _crypto()
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise SigningError(f"{key}: not an unencrypted PEM private key ({e})") from None
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _files(model_dir: Path) -> dict[str, str]:
    out = {}
    for p in sorted(model_dir.rglob("*")):
        rel = p.relative_to(model_dir).as_posix()
        if p.is_file() and rel not in (SIGNATURE, SIGNED_INFO) and not p.name.startswith("."):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def sign(model_dir: str | Path, key: str | Path) -> Path:
    """Sign every file of `model_dir` with the private key at `key`; returns the signature's path."""
    ms = _model_signing()
    model_dir, key = Path(model_dir), Path(key)
    if not model_dir.is_dir():
        raise SigningError(f"{model_dir}: not a directory")
    if not key.is_file():
        raise SigningError(f"{key}: no such key file (make one with: trainlock keygen --out DIR)")
    info = {
        "signer": fingerprint(_public_from_private(key)),
        "signed_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "trainlock_version": __version__,
        "files": _files(model_dir),
    }
    atomic.write_text(model_dir / SIGNED_INFO, json.dumps(info, indent=2, sort_keys=True))
    with atomic.writing_file(model_dir / SIGNATURE) as tmp:
        hashing = ms.hashing.Config().set_ignored_paths(paths=[SIGNATURE, tmp.name], ignore_git_paths=True)
        ms.signing.Config().use_elliptic_key_signer(private_key=key).set_hashing_config(hashing).sign(model_dir, tmp)
    return model_dir / SIGNATURE


@dataclass
class SignatureReport:
    """What `verify_signature` found."""

    ok: bool
    reason: str
    signer: str | None = None  # fingerprint recorded in the signed trainlock.sig.json
    signed_at: str | None = None
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _diff_lists(message: str) -> tuple[list[str], list[str], list[str]]:
    """(added, removed, changed) from model-signing's mismatch message (a list's repr: quotes may be
    escaped)."""
    message = message.replace("\\'", "'")
    names = r"([^\"\]]*?)['\"]?(?:,\s*['\"]|\])"
    added = [
        f.strip() for m in re.findall(r"Extra files found in model '[^']*': " + names, message) for f in m.split(",")
    ]
    removed = [
        f.strip() for m in re.findall(r"Missing files in model '[^']*': " + names, message) for f in m.split(",")
    ]
    changed = re.findall(r"Hash mismatch for '([^']*)'", message)
    return sorted(added), sorted(removed), sorted(changed)


def verify_signature(model_dir: str | Path, public_key: str | Path) -> SignatureReport:
    """Check `model_dir/model.sig` against `public_key` and every file of the directory."""
    ms = _model_signing()
    model_dir, public_key = Path(model_dir), Path(public_key)
    if not public_key.is_file():
        raise SigningError(f"{public_key}: no such public key file")
    signature = model_dir / SIGNATURE
    if not signature.is_file():
        return SignatureReport(
            False,
            f"{model_dir} is not signed (no {SIGNATURE}); sign it with: trainlock sign {model_dir} --key PRIVATE.pem",
        )
    expected = fingerprint(public_key.read_bytes())
    try:
        ms.verifying.Config().use_elliptic_key_verifier(public_key=public_key).verify(model_dir, signature)
    except Exception as e:
        message = str(e)
        added, removed, changed = _diff_lists(message)
        if "Key mismatch" in message:
            reason = f"signed with another key than {public_key.name} (fingerprint {expected[:16]}...)"
        elif added or removed or changed:
            reason = "files changed since signing: " + "; ".join(
                f"{what} {', '.join(names)}"
                for what, names in (("added", added), ("removed", removed), ("changed", changed))
                if names
            )
        else:
            reason = f"the signature does not verify: {type(e).__name__}: {message[:200]}"
        return SignatureReport(False, reason, added=added, removed=removed, changed=changed)
    try:
        info = json.loads((model_dir / SIGNED_INFO).read_text())
    except (OSError, json.JSONDecodeError):
        info = {}
    signer, when = info.get("signer"), info.get("signed_at")
    if signer != expected:
        return SignatureReport(
            False,
            f"the signed {SIGNED_INFO} names signer {str(signer)[:16]}..., not this key",
            signer=signer,
            signed_at=when,
        )
    return SignatureReport(
        True, f"signed by {signer[:16]}... at {when}; every file is as signed", signer=signer, signed_at=when
    )
