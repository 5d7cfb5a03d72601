"""Verify a saved model directory: its weights, its metadata, and every certificate it carries.

`verify(model_dir)` returns a `VerifyReport` of rows (check, subject, measured, required, holds,
reason); `report.ok` is True when every row holds. What is checked:

* file: the SHA-256 of model.safetensors against trainlock.json's weights_sha256;
* tensor: every tensor's SHA-256 (dtype + shape + raw bytes, `trainlock.io.hashing`) against
  meta["hashes"]["tensors"]: a changed tensor gives a row naming it; missing and extra tensors
  give a row each; when all match, one summary row;
* state: the state hash recomputed from the weights, against meta["hashes"]["state"], and the
  recorded state hash against the recorded tensor hashes (a hand-edited hash list is caught);
* header: the safetensors header metadata against trainlock.json: state_sha256, certificates,
  locks (and conservation when present), trainlock_version and format; a difference names the
  first differing fields, e.g. "certificates[0].measured: header 2.5, trainlock.json 9.0";
* record: every field of trainlock.json (but weights_sha256, the hash of the weights file itself)
  against the record hash in the safetensors header; an edited, added or removed field gives a row
  naming it (e.g. "metrics.accuracy"). The hash binds the claims to the weights file; it does not stop
  someone who rewrites both (that is what `trainlock sign` is for);
* files: for a Hugging Face model, config.json, the tokenizer and generation files against the SHA-256
  bound in meta["files"] (missing, changed and unbound files are named);
* certificate: each stored certificate in meta["certificates"] is internally consistent (its
  `holds` flag agrees with `measured relation required`);
* lock: every lock in meta["locks"] is rebuilt (`trainlock.locks.factory.lock_from_meta`) and
  re-certified from the weights: one row per certificate named by lock and invariant, holding when
  the certificate holds and, when a stored certificate with the same lock and invariant exists,
  the re-measured value agrees with the stored one (relative tolerance 1e-3);
* signature (with `public_key`): model.sig verifies with the key over every file of the directory;
  the signer's fingerprint and the signing time, or the files added, removed or changed since;
* conservation: a conservation certificate (meta["conservation"]) re-checked for internal
  consistency by `trainlock.certify.conservation.check_conservation` (Pinsker bound, accuracy drop,
  N bound).

An unreadable input (missing directory or file, bad JSON, a safetensors file that cannot be
parsed, e.g. truncated) raises `trainlock.io.artifacts.ArtifactError` instead of returning a report.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..io.artifacts import (
    META,
    WEIGHTS,
    ArtifactError,
    _json_default,
    changed_fields,
    file_problems,
    read_header,
    read_meta,
    record_hashes,
)
from ..io.hashing import file_sha256 as _file_sha256
from ..io.hashing import state_hashes, state_sha256

__all__ = ["Row", "VerifyReport", "format_table", "verify"]

RECERTIFY_RTOL = 1e-3  # stored vs re-measured certificate values (power iteration is not bit-exact)


@dataclass
class Row:
    """One check: what was checked (`check`, `subject`), the numbers, and whether it holds."""

    check: str  # file, tensor, state, header, certificate, lock, conservation
    subject: str
    measured: Any
    required: Any
    holds: bool
    reason: str


@dataclass
class VerifyReport:
    model_dir: str
    rows: list[Row] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there is at least one row and every row holds (exit code 0 in the CLI)."""
        return bool(self.rows) and all(r.holds for r in self.rows)

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if not r.holds]

    def add(self, check: str, subject: str, measured, required, holds: bool, reason: str) -> Row:
        r = Row(check, subject, measured, required, bool(holds), reason)
        self.rows.append(r)
        return r

    def to_dict(self) -> dict:
        return {"model_dir": self.model_dir, "ok": self.ok, "rows": [asdict(r) for r in self.rows]}

    def table(self) -> str:
        return format_table(self)


def _short(v, width: int = 18) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= width else s[: width - 3] + "..."


def format_table(report: VerifyReport) -> str:
    """A plain-text table, one line per row, then a one-line verdict."""
    head = ("", "check", "subject", "measured", "required", "reason")
    lines = [
        (("ok" if r.holds else "FAIL"), r.check, r.subject, _short(r.measured), _short(r.required), r.reason)
        for r in report.rows
    ]
    widths = [max(len(str(x[i])) for x in [head, *lines]) for i in range(5)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths), "-" * 6)]
    out += [fmt.format(*map(str, x)) for x in lines]
    n_bad = len(report.failures)
    out.append(
        f"{report.model_dir}: "
        + (f"all {len(report.rows)} checks hold" if report.ok else f"{n_bad} of {len(report.rows)} checks FAIL")
    )
    return "\n".join(out)


def _canon(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=_json_default)


def _diff(a, b, path: str = "", limit: int = 3) -> list[str]:
    """Paths where JSON-like `a` (header) and `b` (trainlock.json) differ, at most `limit`."""
    out: list[str] = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            p = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append(f"{p}: missing in header, trainlock.json {_short(b[k], 40)}")
            elif k not in b:
                out.append(f"{p}: header {_short(a[k], 40)}, missing in trainlock.json")
            else:
                out += _diff(a[k], b[k], p, limit - len(out))
            if len(out) >= limit:
                break
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path or '(top)'}: header has {len(a)} entries, trainlock.json {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            out += _diff(x, y, f"{path}[{i}]", limit - len(out))
            if len(out) >= limit:
                break
    elif _canon(a) != _canon(b):
        out.append(f"{path or '(top)'}: header {_short(a, 40)}, trainlock.json {_short(b, 40)}")
    return out[:limit]


def _check_tensors(report: VerifyReport, tensors: dict, meta: dict) -> str:
    actual = state_hashes(tensors)
    hashes = meta.get("hashes")
    if not isinstance(hashes, dict) or not isinstance(hashes.get("tensors"), dict):
        report.add(
            "tensor",
            "hashes",
            None,
            None,
            False,
            f"{META} records no per-tensor hashes (meta['hashes']); saved by an older trainlock? re-save it",
        )
        return actual["state"]
    recorded: dict = hashes["tensors"]
    bad = 0
    for name in sorted(set(recorded) | set(actual["tensors"])):
        if name not in actual["tensors"]:
            report.add(
                "tensor",
                name,
                None,
                _short(recorded[name], 16),
                False,
                f"tensor {name!r} is recorded in {META} but missing from {WEIGHTS}",
            )
            bad += 1
        elif name not in recorded:
            t = tensors[name]
            report.add(
                "tensor",
                name,
                _short(actual["tensors"][name], 16),
                None,
                False,
                f"tensor {name!r} ({str(t.dtype).removeprefix('torch.')}, shape {list(t.shape)}) is in "
                f"{WEIGHTS} but not recorded in {META}",
            )
            bad += 1
        elif actual["tensors"][name] != recorded[name]:
            t = tensors[name]
            report.add(
                "tensor",
                name,
                actual["tensors"][name][:16],
                str(recorded[name])[:16],
                False,
                f"tensor {name!r} ({str(t.dtype).removeprefix('torch.')}, shape {list(t.shape)}) changed: "
                f"SHA-256 {actual['tensors'][name][:16]}... != recorded {str(recorded[name])[:16]}...",
            )
            bad += 1
    if not bad:
        n = len(recorded)
        report.add("tensor", f"{n} tensors", n, n, True, f"every tensor's SHA-256 (dtype, shape, bytes) matches {META}")
    rec_state = hashes.get("state")
    ok = rec_state == actual["state"]
    report.add(
        "state",
        "state_sha256",
        actual["state"][:16],
        str(rec_state)[:16],
        ok,
        "state hash of the weights matches"
        if ok
        else f"state hash of the weights {actual['state'][:16]}... != recorded {str(rec_state)[:16]}...",
    )
    derived = state_sha256(recorded)
    ok = rec_state == derived
    report.add(
        "state",
        "hashes (json)",
        derived[:16],
        str(rec_state)[:16],
        ok,
        "recorded state hash agrees with the recorded tensor hashes"
        if ok
        else f"{META} is inconsistent: its state hash {str(rec_state)[:16]}... is not the hash of its own tensor "
        f"hashes ({derived[:16]}...); the hash list was edited",
    )
    return actual["state"]


def _check_header(report: VerifyReport, header: dict, meta: dict) -> None:
    hashes = meta.get("hashes") if isinstance(meta.get("hashes"), dict) else {}
    plain = [
        ("state_sha256", hashes.get("state")),
        ("trainlock_version", meta.get("trainlock_version")),
        ("format", None if meta.get("format") is None else str(meta.get("format"))),
    ]
    header = {**header, "format": header.get("trainlock_format", header.get("format"))}  # 0.1 wrote "format"
    for key, expect in plain:
        got = header.get(key)
        if got is None:
            report.add(
                "header",
                key,
                None,
                _short(expect),
                False,
                f"the safetensors header has no {key!r} (saved by an older trainlock, or rewritten)",
            )
        else:
            ok = got == expect
            cut = (lambda v: None if v is None else str(v)[:16]) if key == "state_sha256" else _short
            report.add(
                "header",
                key,
                cut(got),
                cut(expect),
                ok,
                f"header and {META} agree"
                if ok
                else f"header {key} = {_short(got, 24)} but {META} says {_short(expect, 24)}",
            )
    keys = ["certificates", "locks"] + (
        ["conservation"] if "conservation" in header or meta.get("conservation") is not None else []
    )
    for key in keys:
        want = meta.get(key) if key == "conservation" else (meta.get(key) or [])
        raw = header.get(key)
        if raw is None:
            report.add(
                "header",
                key,
                None,
                f"{len(want) if isinstance(want, list) else 1} entries",
                False,
                f"the safetensors header has no {key!r}, {META} has one",
            )
            continue
        try:
            got = json.loads(raw)
        except json.JSONDecodeError as e:
            report.add("header", key, _short(raw), None, False, f"header {key!r} is not valid JSON ({e})")
            continue
        ok = _canon(got) == _canon(want)
        diffs = [] if ok else _diff(got, json.loads(_canon(want)), key)
        n = len(got) if isinstance(got, list) else 1
        report.add(
            "header",
            key,
            f"{n} entries",
            f"{len(want) if isinstance(want, list) else 1} entries",
            ok,
            f"header and {META} agree"
            if ok
            else f"{META} differs from the header: " + "; ".join(diffs or ["(values differ)"]),
        )


def _check_record(report: VerifyReport, header: dict, meta: dict) -> None:
    """Every claim in trainlock.json against the record hash in the safetensors header."""
    want = header.get("record_sha256")
    if want is None:
        report.add(
            "record",
            META,
            None,
            None,
            False,
            f"the claims in {META} are not bound to the weights: the safetensors header has no record hash "
            f"(saved by trainlock {meta.get('trainlock_version', '< 0.2.0')}); load and save it again to bind them",
        )
        return
    got = record_hashes(meta)
    if got["record"] == want:
        report.add(
            "record",
            META,
            got["record"][:16],
            want[:16],
            True,
            f"every field of {META} (but weights_sha256, checked against the file) matches the header's hash",
        )
        return
    for key, how in changed_fields(header, meta):
        report.add(
            "record",
            key,
            None,
            None,
            False,
            f"{META} field {key!r} was {how} after saving: it no longer matches the record hash bound to the weights",
        )


def _check_files(report: VerifyReport, path: Path, meta: dict) -> None:
    """A Hugging Face model's config.json, tokenizer and generation files against meta["files"]."""
    arch = meta.get("architecture")
    if not (isinstance(arch, dict) and arch.get("name") == "hf"):
        return
    problems = file_problems(path, meta)
    files = meta.get("files") if isinstance(meta.get("files"), dict) else {}
    if problems:
        for p in problems:
            report.add("files", p.split(" ")[0], None, None, False, p)
    else:
        report.add(
            "files",
            f"{len(files)} files",
            len(files),
            len(files),
            True,
            f"config.json and the tokenizer files match the SHA-256 bound in {META}",
        )


def _stored_certificates(report: VerifyReport, meta: dict) -> list[dict]:
    from ..locks.base import RELATIONS

    certs = meta.get("certificates") or []
    if not isinstance(certs, list):
        report.add("certificate", "certificates", None, None, False, f"{META}: 'certificates' is not a list")
        return []
    out = []
    for i, c in enumerate(certs):
        if isinstance(c, dict) and c.get("kind") == "conservation":
            continue
        subject = f"{c.get('lock')}: {c.get('invariant')}" if isinstance(c, dict) else f"certificates[{i}]"
        try:
            rel = RELATIONS[c["relation"]]
            measured, required = float(c["measured"]), float(c["required"])
        except (KeyError, TypeError, ValueError) as e:
            report.add("certificate", subject, None, None, False, f"certificates[{i}] is malformed ({e!r})")
            continue
        holds = bool(rel(measured, required))
        stored = c.get("holds")
        ok = stored is None or bool(stored) == holds
        report.add(
            "certificate",
            subject,
            measured,
            f"{c['relation']} {required:g}",
            ok and holds,
            (
                f"stored holds={stored} but {measured:g} {c['relation']} {required:g} is {holds}"
                if not ok
                else f"stored claim {measured:g} {c['relation']} {required:g} "
                + ("holds" if holds else "does NOT hold")
            ),
        )
        out.append(c)
    return out


def _rebuild_lock(entry: dict):
    """A RecordedLock from one meta["locks"] entry (a lock from a plugin that is not loaded raises
    UnknownNameError naming the plugin, which the caller lets through: not a failed check but a missing piece)."""
    from ..locks.factory import recorded_lock

    return recorded_lock(entry)


def _build_model(tensors: dict, meta: dict, model: nn.Module | None, directory: Path | None = None) -> nn.Module:
    from ..io.artifacts import rebuild

    return rebuild(tensors, meta, None if model is None else copy.deepcopy(model), directory=directory).eval()


def _check_locks(
    report: VerifyReport,
    tensors: dict,
    meta: dict,
    stored: list[dict],
    model: nn.Module | None,
    directory: Path | None = None,
):
    entries = meta.get("locks") or []
    if not entries:
        return
    if not isinstance(entries, list):
        report.add("lock", "locks", None, None, False, f"{META}: 'locks' is not a list")
        return
    try:
        rebuilt = _build_model(tensors, meta, model, directory)
    except (ArtifactError, ValueError, KeyError, TypeError) as e:
        report.add("lock", "model", None, None, False, f"cannot rebuild the model to re-certify its locks: {e}")
        return
    pool: dict[tuple, list[dict]] = {}
    for c in stored:
        pool.setdefault((c.get("lock"), c.get("invariant")), []).append(c)
    from ..locks import LOCKS

    for i, entry in enumerate(entries):
        name = entry.get("type") if isinstance(entry, dict) else None
        if isinstance(entry, dict) and entry.get("plugin") and name not in LOCKS:
            _rebuild_lock(entry)  # raises UnknownNameError: "pass --plugin ..."
        try:
            if not isinstance(entry, dict) or not name:
                raise ValueError('expected {"type": ..., "config": {...}}')
            lock = _rebuild_lock(entry)
            certs = lock.certify(rebuilt)
        except Exception as e:
            report.add(
                "lock",
                f"locks[{i}] {name}",
                None,
                None,
                False,
                f"cannot rebuild and re-certify lock {name!r}: {type(e).__name__}: {e}",
            )
            continue
        if not certs:
            report.add("lock", f"locks[{i}] {name}", None, None, False, "the lock returned no certificate")
        for cert in certs:
            subject = f"{cert.lock}: {cert.invariant}"
            req = f"{cert.relation} {cert.required:g}"
            reason = f"re-certified from the weights: {cert.measured:g} {cert.relation} {cert.required:g} " + (
                "holds" if cert.holds else "does NOT hold"
            )
            holds = cert.holds
            match = pool.get((cert.lock, cert.invariant))
            if match:
                old = match.pop(0)
                try:
                    old_m = float(old["measured"])
                except (KeyError, TypeError, ValueError):
                    old_m = math.nan
                same = math.isclose(old_m, float(cert.measured), rel_tol=RECERTIFY_RTOL, abs_tol=1e-9)
                if not same:
                    holds = False
                    reason += f"; the stored certificate says {old_m:g}, re-measured {cert.measured:g}"
                else:
                    reason += "; agrees with the stored certificate"
            report.add("lock", subject, float(cert.measured), req, holds, reason)


def _check_conservation(report: VerifyReport, meta: dict) -> None:
    from .conservation import check_conservation

    found = []
    if meta.get("conservation") is not None:
        found.append(("conservation", meta["conservation"]))
    for i, c in enumerate(meta.get("certificates") or [] if isinstance(meta.get("certificates"), list) else []):
        if isinstance(c, dict) and c.get("kind") == "conservation":
            found.append((f"certificates[{i}]", c))
    for where, cert in found:
        if not isinstance(cert, dict):
            report.add("conservation", where, None, None, False, f"{where} is not an object")
            continue
        for r in check_conservation(cert):
            subject = r["subject"] if where == "conservation" else f"{where} {r['subject']}"
            report.add("conservation", subject, r["measured"], r["required"], r["holds"], r["reason"])


def _which_copy(report: VerifyReport, meta: dict) -> None:
    """Say whether this is a public release or the owner's copy with its private record."""
    rel = meta.get("release") or {}
    if rel.get("public"):
        report.add(
            "release",
            "public copy",
            "public",
            None,
            True,
            f"a public release (private fields left out: {', '.join(rel.get('dropped') or []) or 'none'})",
        )
        if rel.get("card_sha256"):  # the model card (README.md) quotes the claims: bound by its hash in the record
            from ..io.release import CARD, card_problem

            problem = card_problem(report.model_dir, meta)
            report.add("release", f"model card {CARD}", None, None, problem is None, problem or "matches its SHA-256")
        return
    private = [k for k in ("lock", "base", "train") if k in meta]
    if private and meta.get("locks"):
        report.add(
            "release",
            "owner's copy",
            "private",
            None,
            True,
            f"the owner's copy: it holds private fields ({', '.join(private)}: e.g. the pre-lock spectrum an "
            f"insider attack reads); publish the copy `trainlock release` writes",
        )


def verify(model_dir: str | Path, model: nn.Module | None = None, public_key: str | Path | None = None) -> VerifyReport:
    """Check a model directory's weights, metadata and certificates; see the module docstring.

    `model`: for a custom (non built-in) architecture, a module of that architecture, used only
    to re-certify locks (a copy is loaded with the weights). `public_key`: also check the
    directory's signature (`trainlock.io.signing`). Raises ArtifactError on unreadable input.
    """
    path = Path(model_dir)
    meta = read_meta(path)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise ArtifactError(f"{path}: missing {WEIGHTS}")
    header = read_header(path)
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{weights}: unreadable safetensors file ({e})") from None
    report = VerifyReport(str(path))

    expected = meta.get("weights_sha256")
    got = _file_sha256(weights)
    if expected is None:
        report.add("file", WEIGHTS, got[:16], None, False, f"{META} records no weights_sha256")
    else:
        ok = got == expected
        report.add(
            "file",
            WEIGHTS,
            got[:16],
            str(expected)[:16],
            ok,
            "file SHA-256 matches"
            if ok
            else f"file SHA-256 {got[:16]}... != recorded {str(expected)[:16]}...; "
            f"the weights file was changed after saving",
        )
    _check_tensors(report, tensors, meta)
    _check_header(report, header, meta)
    _check_record(report, header, meta)
    _check_files(report, path, meta)
    stored = _stored_certificates(report, meta)
    _check_locks(report, tensors, meta, stored, model, path)
    _check_conservation(report, meta)
    _which_copy(report, meta)
    if public_key is not None:
        _check_signature(report, path, public_key)
    return report


def _check_signature(report: VerifyReport, path: Path, public_key: str | Path) -> None:
    from ..io.signing import verify_signature

    sig = verify_signature(path, public_key)
    report.add("signature", "model.sig", sig.signer and sig.signer[:16], Path(public_key).name, sig.ok, sig.reason)
