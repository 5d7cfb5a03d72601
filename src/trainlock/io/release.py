"""What a model owner publishes: `release(model_dir, out)` writes the public copy of a locked model.

The owner's directory holds a private record: the pre-lock spectrum and the lock's history (what
SpecDef's sigma_before and per-epoch logs are; the sv-clip attack's insider variant reads exactly
that), the retain task's training curve and configuration, the base model's path, per-layer feature
drift. The public copy keeps what a third party needs to load the model and re-check its claims:
the same weights, the architecture (and, for transformers, config.json and the tokenizer), the
certificates and the lock entries they are re-computed from (configurations and the post-lock values
they compare against), the retained-accuracy summary (a claim: checking it needs the original model),
the task and metrics. It is bound and hashed like any model directory, and marked
`"release": {"public": true, ...}` so `verify` says which copy it holds.

The public copy is also a model card: `README.md` says what the lock claims (its certificates and the
retained accuracy), the label names (for a Hugging Face model also written to config.json's `id2label`) and,
given the red team's results directory, its summary (worst case, best reference attacker, uplift, base
uplift, step and data budget, date). The card is bound like every claim: its SHA-256 is in
`release.card_sha256` of trainlock.json (whose record the weights file binds), and `verify` checks it; the
red-team summary it quotes is in `release.redteam`. Files are world-readable (0644; the directory 0755).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path

from .artifacts import META, WEIGHTS, load, read_meta, record_hashes, save

CARD = "README.md"

PRIVATE = ("lock", "base", "train", "attack")  # top-level fields dropped: lock history and spectra, paths, curves
PRIVATE_CONSERVATION = ("feature_drift", "progress")  # per-layer drift points at the lock; progress is the loss curve


def public_meta(meta: dict) -> dict:
    """The metadata of the public copy (see the module docstring); `meta` is not modified."""
    out = {k: v for k, v in meta.items() if k not in PRIVATE and k not in ("weights_sha256", "hashes")}
    if isinstance(out.get("locks"), list):  # config fields a lock marks private (option(..., private=True))
        out["locks"] = [_public_entry(e) for e in out["locks"]]
    cons = out.get("conservation")
    if isinstance(cons, dict):
        out["conservation"] = {k: v for k, v in cons.items() if k not in PRIVATE_CONSERVATION}
    dropped = sorted(k for k in meta if k in PRIVATE)
    if isinstance(cons, dict):
        dropped += [f"conservation.{k}" for k in PRIVATE_CONSERVATION if k in cons]
    out["release"] = {"public": True, "dropped": dropped, "from_record_sha256": record_hashes(meta)["record"]}
    return out


def _public_entry(entry):
    """A lock entry without the config fields it lists as private: a field's name, or a dotted path into the
    config (`locks.1.seed`: a field of a composite's second child)."""
    if not isinstance(entry, dict) or not entry.get("private"):
        return entry
    hidden = sorted(set(entry["private"]))
    config = entry.get("config") or {}
    for path in hidden:
        config = _without(config, str(path).split("."))
    return {**{k: v for k, v in entry.items() if k != "private"}, "config": config, "private_dropped": hidden}


def _without(obj, path: list[str]):
    """A copy of `obj` (nested dicts and lists) without the dict key at `path`; unchanged when nothing is there."""
    if not path:
        return obj
    key, rest = path[0], path[1:]
    if isinstance(obj, dict) and key in obj:
        if not rest:
            return {k: v for k, v in obj.items() if k != key}
        return {**obj, key: _without(obj[key], rest)}
    if isinstance(obj, list) and rest and key.isdigit() and int(key) < len(obj):
        i = int(key)
        return [*obj[:i], _without(obj[i], rest), *obj[i + 1 :]]
    return obj


def release(
    model_dir: str | Path, out: str | Path, redteam: str | Path | None = None, labels: list[str] | None = None
) -> tuple[Path, dict]:
    """Write the public copy of `model_dir` to `out` (complete or not at all), with its model card README.md.
    `redteam`: a `trainlock redteam` results directory of this model (its summary.json goes into the card;
    a directory of another model is refused); `labels`: the class names (default: the task's, when it names
    them, else the class indices). Returns (out, its metadata)."""
    meta = read_meta(model_dir)
    if (meta.get("release") or {}).get("public"):
        raise ValueError(f"{model_dir} is already a public release")
    summary = read_redteam(redteam) if redteam is not None else None  # a bad directory fails before any work
    model, _ = load(model_dir, unverified=False)  # a public copy never launders an edited record or file
    if summary is not None:
        from .hashing import state_hashes

        attacked, ours = summary.pop("model_state_sha256", None), state_hashes(model)["state"]
        if attacked != ours:
            raise ValueError(
                f"--redteam {redteam} holds the red team of another model (weights {str(attacked)[:12]}..., this "
                f"model's {ours[:12]}...); run `trainlock redteam {model_dir} ...` and pass its --out"
            )
    from ..models.hf import HFClassifier

    hf = isinstance(model, HFClassifier)
    names = _label_names(model, meta, labels, from_task=hf)
    if names and hf:  # config.json names the classes too (transformers' pipelines read id2label)
        model.model.config.id2label = dict(enumerate(names))
        model.model.config.label2id = {n: i for i, n in enumerate(names)}
    pub = public_meta(meta)
    if names:
        pub["release"]["labels"] = names
    if summary is not None:
        pub["release"]["redteam"] = summary
    card = model_card(pub, Path(out).name)
    pub["release"]["card_sha256"] = hashlib.sha256(card.encode()).hexdigest()
    path = save(model, out, pub, files={CARD: card})
    _world_readable(path, [WEIGHTS, META, CARD, *(read_meta(path).get("files") or {})])
    return path, read_meta(path)


def _world_readable(path: Path, names) -> None:
    """A public copy is for anyone: its files 0644 and the directory 0755 (safetensors writes 0600)."""
    os.chmod(path, 0o755)
    for name in dict.fromkeys(names):
        f = path / name
        if f.is_file() and not f.is_symlink():
            os.chmod(f, 0o644)


def read_redteam(directory: str | Path) -> dict:
    """The card's red-team summary from a `trainlock redteam` results directory: worst case, best reference,
    uplift, base uplift, budget, verdict, task, date (summary.json's time) and the attacked weights' hash
    (identity.json's model_state_sha256, checked against the released weights by `release`)."""
    d = Path(directory)
    summary_file, ident_file = d / "summary.json", d / "identity.json"
    if not summary_file.is_file():
        raise ValueError(f"--redteam {d}: no summary.json (run `trainlock redteam MODEL_DIR --out {d}` first)")
    try:
        summary = json.loads(summary_file.read_text())
        ident = json.loads(ident_file.read_text()) if ident_file.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--redteam {d}: summary.json or identity.json is not valid JSON ({e})") from None
    if not isinstance(summary, dict) or not isinstance(ident, dict) or not ident.get("model_state_sha256"):
        raise ValueError(f"--redteam {d}: no record of which model was attacked (identity.json); rerun the red team")

    def pick(x, *keys):
        return {k: x.get(k) for k in keys} if isinstance(x, dict) else None

    when = datetime.datetime.fromtimestamp(summary_file.stat().st_mtime, datetime.timezone.utc)
    return {
        "task": ident.get("task"),
        "worst": pick(summary.get("worst"), "attack", "accuracy", "steps_to_target", "diverged"),
        "reference": pick(summary.get("reference"), "attacker", "accuracy"),
        "uplift": summary.get("uplift"),
        "base_uplift": summary.get("base_uplift"),
        "budget": summary.get("budget"),
        "verdict": summary.get("verdict"),
        "worst_case_at": summary.get("worst_case_at"),
        "date": when.strftime("%Y-%m-%d %H:%M UTC"),
        "model_state_sha256": ident["model_state_sha256"],
    }


def _label_names(model, meta: dict, labels: list[str] | None, from_task: bool = True) -> list[str] | None:
    """The class names: `labels`, else (`from_task`: a text model's task names them) the task's, else the class
    indices."""
    n = getattr(model, "num_classes", None)
    if n is None:
        arch = meta.get("architecture")
        n = ((arch or {}).get("kwargs") or {}).get("num_classes") if isinstance(arch, dict) else None
    if labels is not None:
        labels = [str(x) for x in labels]
        if isinstance(n, int) and len(labels) != n:
            raise ValueError(f"--labels names {len(labels)} classes; the model has {n}")
        if len(set(labels)) != len(labels):
            raise ValueError("--labels names a class twice")
        return labels
    names = None
    if from_task and isinstance(meta.get("task"), str):
        try:
            from .. import tasks

            names = getattr(tasks.get(meta["task"]), "label_names", None)
        except Exception:  # the task's data is not here (or not a task any more): the indices stand in
            names = None
    if names and (not isinstance(n, int) or len(names) == n):
        return [str(x) for x in names]
    return [str(i) for i in range(n)] if isinstance(n, int) and n > 0 else None


def _num(x, pct: bool = False) -> str:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return "-"
    return f"{100 * x:+.1f} points" if pct else f"{x:.4f}"


def model_card(meta: dict, name: str = "model") -> str:
    """README.md of a public copy, from its (public) metadata: every line is a claim trainlock.json holds."""
    lines = [f"# {name}", ""]
    arch = meta.get("architecture") if isinstance(meta.get("architecture"), dict) else {}
    lines += [
        f"A model locked against unauthorized fine-tuning with trainlock {meta.get('trainlock_version', '?')}: "
        f"architecture `{arch.get('name', 'custom')}`, authorized task `{meta.get('task', '?')}`"
        + (f", test accuracy {_num((meta.get('metrics') or {}).get('accuracy'))}." if meta.get("metrics") else "."),
        "",
        "Every claim below is in `trainlock.json`, bound to the weights (`model.safetensors`); this card's SHA-256 "
        "is there too. Check them all, from the weights: `trainlock verify DIR`.",
        "",
        "## What the lock claims",
        "",
    ]
    locks = meta.get("locks") if isinstance(meta.get("locks"), list) else []
    if locks:
        lines.append("Locks: " + ", ".join(f"`{e.get('type', '?')}`" for e in locks if isinstance(e, dict)) + ".")
        lines.append("")
    certs = [c for c in meta.get("certificates") or [] if isinstance(c, dict)]
    if certs:
        lines += ["| lock | invariant | measured | relation | required | holds |", "|---|---|---|---|---|---|"]
        for c in certs:
            lines.append(
                f"| {c.get('lock', '?')} | {c.get('invariant', '?')} | {_g(c.get('measured'))} | "
                f"{c.get('relation', '?')} | {_g(c.get('required'))} | {'yes' if c.get('holds') else 'NO'} |"
            )
    else:
        lines.append("No certificates: this model records no lock.")
    cons = meta.get("conservation") if isinstance(meta.get("conservation"), dict) else None
    acc = (cons or {}).get("accuracy") if isinstance((cons or {}).get("accuracy"), dict) else None
    if acc:
        lines += [
            "",
            f"Authorized task kept: accuracy {_num(acc.get('original'))} before the lock, {_num(acc.get('modified'))} "
            f"after (drop {_num(acc.get('drop'))}; a claim: checking it needs the original model).",
        ]
    labels = (meta.get("release") or {}).get("labels")
    lines += ["", "## Labels", ""]
    if isinstance(labels, list) and labels:
        lines.append(", ".join(f"{i}: {lab}" for i, lab in enumerate(labels)))
    else:
        lines.append("Not recorded.")
    rt = (meta.get("release") or {}).get("redteam")
    lines += ["", "## Red team", ""]
    if isinstance(rt, dict):
        worst, ref, budget = rt.get("worst") or {}, rt.get("reference") or {}, rt.get("budget") or {}
        lines += [
            f"`trainlock redteam` on `{rt.get('task', '?')}`, {rt.get('date', '?')}; budget: "
            f"{budget.get('steps_per_run', '?')} steps per run, {budget.get('n_train', '?')} training examples.",
            "",
            f"- worst case (the strongest attack from these weights): {worst.get('attack') or 'none completed'}, "
            f"accuracy {_num(worst.get('accuracy'))}",
            f"- best reference attacker (what an attacker uses instead): {ref.get('attacker') or '-'}, accuracy "
            f"{_num(ref.get('accuracy'))}",
            f"- uplift of these weights over it: {_num(rt.get('uplift'), pct=True)}",
            f"- uplift of the unlocked base: {_num(rt.get('base_uplift'), pct=True)}",
        ]
        if rt.get("verdict"):
            lines += ["", str(rt["verdict"])]
    else:
        lines.append("No red-team summary was attached (`trainlock release --redteam DIR`).")
    return "\n".join(lines) + "\n"


def _g(x) -> str:
    return f"{x:.6g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


def card_problem(path: str | Path, meta: dict) -> str | None:
    """For a public copy with a card: why README.md does not match the card_sha256 bound in its record (None: it does)."""
    want = (meta.get("release") or {}).get("card_sha256")
    if not want:
        return None
    card = Path(path) / CARD
    if not card.is_file():
        return f"{CARD} (the model card) is missing"
    if hashlib.sha256(card.read_bytes()).hexdigest() != want:
        return f"{CARD} (the model card) was changed after release: its SHA-256 differs from the one in {META}"
    return None
