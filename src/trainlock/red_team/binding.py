"""What a red-team results directory is about, recorded before any run and checked on every resume.

Two files, both written atomically before the first run:

- identity.json: the attacked model's weights (`state_hashes(model)["state"]`), the attack task's name and data
  hash, the retain task (`identity`). Another model or task: refused, naming it.
- binding.json: the identity again and the full `RedTeamConfig` (`to_dict()`, an Optuna storage URL's password
  hidden) with the SHA-256 of its bound fields. Another config: refused before any work, naming the first
  differing fields (`loop.max_steps (--max-steps): 10 there, 20 now`).

Every config field is bound except those that cannot change a finished run's numbers or only add to a directory:

- `runner.*` (backend, workers, Ray's address and per-run resources): a run's row is the same wherever it runs
  (one torch thread per run, fixed seeds; see `backends`).
- `storage`: where the search's Optuna study lives; the search reports the trials of the study it opens.
- `epoch_curve`: whether runs log their accuracy after every epoch; the training and the final accuracy are the same
  either way (evaluation draws no random numbers and updates no statistics), so rows are keyed without it.
- `budget`: the suite is planned in a fixed order and cut to the budget, and each row is keyed by its full attack
  spec, so a larger budget adds runs after the ones there and a smaller one reports the first runs of the same plan
  (rows beyond it stay in runs.jsonl, unreported). The binding records the latest budget.
- `search_trials`: may grow (the study resumes and adds trials) or be 0 (no search this time); lowering it otherwise
  is refused, since the study's finished trials would all be reported. The binding records the largest.
- `loop.device`: allowed with a one-line warning and recorded (`devices`): the spec keys leave the device out by
  design (where a run executes is not what it is), but CPU and CUDA kernels can differ in the last digits, so a
  directory says which devices its rows came from.

Anything else, a field the suite does not read today included, is bound: a new field is never ignored by accident.

A directory written before binding.json existed (identity.json, no binding.json) is resumed with a one-line
warning and bound to the config of that run: its rows carry their full attack configs in their keys, so none is
reported under the wrong settings; its references.json and search study are taken as that config's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from pathlib import Path

from ..atomic import write_text

IDENTITY = "identity.json"
BINDING = "binding.json"
VERSION = 1
logger = logging.getLogger(__name__)

NEUTRAL = ("runner", "storage", "epoch_curve")  # where runs execute, where the search study lives, what is logged
GROWING = ("budget", "search_trials")
DEVICE = "loop.device"
# the red team sets these per run: they are not flags of `redteam` (cli/attacking.py's _PER_RUN)
_NOT_FLAGS = ("loop.optimizer", "loop.lr", "loop.lr_gamma", "loop.weight_decay", "loop.momentum")
_IDENTITY_NAMES = {
    "model_state_sha256": "the model's weights",
    "task": "the task",
    "task_sha256": "the task's data",
    "retain": "the retain task",
}


class BindingMismatch(ValueError):
    """A results directory made for another model, task or config."""


def _leaves(data: dict, prefix: str = "") -> dict:
    """{"loop.max_steps": 10, ...}: a nested dict's leaves by dotted name, in field order."""
    out = {}
    for k, v in data.items():
        if isinstance(v, dict) and v:
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _hide_password(url: str | None) -> str | None:
    return None if url is None else re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def config_dict(cfg) -> dict:
    """The config as recorded: `to_dict()`, the storage URL's password hidden."""
    d = cfg.to_dict()
    if "storage" in d:
        d["storage"] = _hide_password(d["storage"])
    return d


def _free(name: str) -> bool:
    """A field that does not bind the directory (see the module docstring)."""
    return name == DEVICE or any(name == f or name.startswith(f + ".") for f in (*NEUTRAL, *GROWING))


def bound(cfg) -> dict:
    """The bound fields of `cfg` by dotted name."""
    return {k: v for k, v in _leaves(config_dict(cfg)).items() if not _free(k)}


def config_sha256(cfg) -> str:
    return hashlib.sha256(json.dumps(bound(cfg), sort_keys=True).encode()).hexdigest()


def flag_of(name: str, cls: type | None = None) -> str | None:
    """The `redteam` flag of a dotted config field (None for a field without one): the loop's and the runner's
    fields are unprefixed (`loop.max_steps` -> --max-steps), nested configs otherwise prefixed (as the CLI's
    `add_config_flags`)."""
    if cls is None:
        from .spec import RedTeamConfig

        cls = RedTeamConfig
    if name in _NOT_FLAGS:
        return None
    parts, prefix = name.split("."), ""
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        f = fields.get(part)
        if f is None or not f.metadata.get("cli", True):
            return None
        if i == len(parts) - 1:
            return "--" + (prefix + part).replace("_", "-")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if not dataclasses.is_dataclass(default):
            return None
        if not (part == "loop" or f.metadata.get("flat", False)):
            prefix += f"{part}_"
        cls = type(default)
    return None


def _named(name: str) -> str:
    flag = flag_of(name)
    return name if flag is None else f"{name} ({flag})"


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _refuse_identity(out: Path, old: dict, ident: dict) -> None:
    diff = [k for k in ident if old.get(k) != ident[k]]
    if diff:
        what = " and ".join(_IDENTITY_NAMES.get(k, k) for k in diff)
        raise BindingMismatch(
            f"{out} holds red-team runs of another {' and '.join(diff)} ({what} differ); resuming would report their numbers as this "
            f"model's. Choose another --out (or delete {out} to start over)"
        )


def identity_diff(out: Path, ident: dict, bound_elsewhere: bool = False) -> None:
    """Refuse `out` when its identity.json is another model's or task's, or when it holds rows without one (and
    without a binding: `bound_elsewhere`)."""
    f = Path(out) / IDENTITY
    if f.is_file():
        try:
            old = json.loads(f.read_text())
        except json.JSONDecodeError:
            old = {}
        _refuse_identity(out, old if isinstance(old, dict) else {}, ident)
        return
    from .runner import RESULTS

    if (Path(out) / RESULTS).is_file() and not bound_elsewhere:
        raise BindingMismatch(
            f"{out} holds red-team runs without a record of which model they attacked; choose another "
            f"--out (or delete {Path(out) / RESULTS} to start over)"
        )


def check(out: Path, ident: dict, cfg) -> tuple[dict, list[str]]:
    """(the binding to write for a run of `cfg` on `ident` in `out`, warnings), after checking the binding there
    (raises BindingMismatch naming the model, the task or the first differing config fields). Writes nothing; the
    warnings (an unbound older directory, another device) are for the caller to log once per command."""
    out = Path(out)
    f = out / BINDING
    identity_diff(out, ident, bound_elsewhere=f.is_file())
    new = {
        "version": VERSION,
        "identity": ident,
        "config": config_dict(cfg),
        "config_sha256": config_sha256(cfg),
        "devices": [cfg.loop.device],
    }
    if not f.is_file():
        if (out / IDENTITY).is_file():
            return new, [
                "written before red-team directories recorded their config: resumed (each row is keyed by its full "
                "attack config) and bound now to this run's config"
            ]
        return new, []
    try:
        old = json.loads(f.read_text())
        old_ident, old_cfg = dict(old["identity"]), dict(old["config"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise BindingMismatch(
            f"{f} is not a red-team binding (not JSON, or fields missing); delete it to bind {out} to this run"
        ) from None
    _refuse_identity(out, old_ident, ident)
    was, now = _leaves(old_cfg), _leaves(new["config"])
    diff = [k for k in dict.fromkeys([*now, *was]) if not _free(k) and was.get(k) != now.get(k)]
    lowered = [k for k in ("search_trials",) if 0 < (now.get(k) or 0) < (was.get(k) or 0)]  # 0: no search at all
    if diff or lowered:
        parts = [f"{_named(k)}: {_short(was.get(k))} there, {_short(now.get(k))} now" for k in diff[:3]]
        parts += [f"{_named(k)}: {was[k]} there, {now[k]} now (finished trials cannot be taken back)" for k in lowered]
        more = f"; also {', '.join(map(_named, diff[3:]))}" if len(diff) > 3 else ""
        raise BindingMismatch(
            f"{out} holds red-team runs of another config: {'; '.join(parts)}{more}; resuming would mix them with "
            f"this config's. Choose another --out (or delete {out} to start over)"
        )
    warnings = []
    devices = [d for d in old.get("devices") or [was.get(DEVICE)] if d is not None]
    if cfg.loop.device not in devices:
        warnings.append(
            f"runs so far ran on {', '.join(map(str, devices))}, new ones on {cfg.loop.device}; rows from both are "
            f"kept (numbers may differ in the last digits by device)"
        )
        devices.append(cfg.loop.device)
    new["devices"] = devices
    new["config"]["search_trials"] = max(was.get("search_trials") or 0, now.get("search_trials") or 0)
    return new, warnings


def write(out: Path, ident: dict, binding: dict | None) -> None:
    """Record `binding` (when given) and, where missing, the identity: binding.json first, then identity.json."""
    out = Path(out)
    if binding is not None:
        write_text(out / BINDING, json.dumps(binding, indent=2, sort_keys=True))
    if not (out / IDENTITY).is_file():
        write_text(out / IDENTITY, json.dumps(ident, indent=2, sort_keys=True))
