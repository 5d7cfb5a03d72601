"""Model directories: `model.safetensors` (weights, never pickle) + `trainlock.json` (metadata).

The JSON records the architecture (registry name and kwargs) so `load` can rebuild the model,
the task, metrics, the lock config and sigma statistics when locked, the package version, and
the SHA-256 of the weights file so that a changed or corrupt file is caught with a clear error,
and per-tensor SHA-256 hashes (`meta["hashes"]`, see `trainlock.io.hashing`) for `trainlock.certify.verify`.

The safetensors header metadata (strings only) repeats what must travel with the weights:
"trainlock_version", "format", "state_sha256" (the state hash over all tensors), "certificates"
and "locks" (JSON of meta["certificates"] and meta["locks"], [] when absent), "conservation"
(JSON of meta["conservation"], only when present), and the record binding: "record_sha256" (the
SHA-256 of the canonical JSON of every field of trainlock.json but weights_sha256, which is the
hash of this very file) and "record_fields" (one hash per field, so an edit can be named).
`verify` checks the header and the JSON agree.

A Hugging Face model's config.json, tokenizer and generation files are hashed into meta["files"] (so bound
like any field). `load` refuses a directory whose binding is missing or broken (`binding_problems`: no or
another weights_sha256, an edited, added or removed field, a changed, missing or unbound file) unless
`unverified=True` (or inside `unverified_loads()`: the CLI's --unverified), which warns instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .._version import __version__
from ..atomic import replace_dir, stale_copies
from ..models import MODELS, build
from ..models.compensated import restore_structure
from ..models.hf import HFClassifier, build_from_config
from .hashing import file_sha256 as _sha256
from .hashing import state_hashes

WEIGHTS = "model.safetensors"
META = "trainlock.json"
FORMAT = 1
logger = logging.getLogger(__name__)


class ArtifactError(RuntimeError):
    """A model directory is missing, incomplete, corrupt, or does not match its model."""


class BindingError(ArtifactError):
    """A model directory whose record or files no longer match its weights, or are not bound (the CLI exits 1)."""


def model_name(model: nn.Module) -> str | None:
    """The registry name of a built-in model's class, or None for any other module."""
    for name in MODELS.names():
        if MODELS.get(name) is type(model):
            return name
    return None


def architecture(model: nn.Module) -> dict | None:
    """{"name", "kwargs"} for a built-in model (enough to rebuild it), else None."""
    name = model_name(model)
    cfg = getattr(model, "config", None)
    return {"name": name, "kwargs": dict(cfg)} if name and isinstance(cfg, dict) else None


UNBOUND = ("weights_sha256", "record_sha256")  # the file's own hash cannot be inside the file it hashes


def record_hashes(meta: dict) -> dict:
    """{"record": SHA-256 of the canonical JSON of `meta` (sorted keys, UNBOUND keys left out),
    "fields": {path: SHA-256} for every top-level field and every key of a top-level object}.

    Stored in the safetensors header, it binds every claim of trainlock.json to the weights file:
    `verify` recomputes it and names the fields whose hash changed."""
    meta = json.loads(canonical_json({k: v for k, v in meta.items() if k not in UNBOUND}))
    fields = {}
    for key, value in meta.items():
        fields[key] = _sha(canonical_json(value))
        if isinstance(value, dict):
            for sub, v in value.items():
                fields[f"{key}.{sub}"] = _sha(canonical_json(v))
    return {"record": _sha(canonical_json(meta)), "fields": fields}


# Files beside the weights that transformers reads when it rebuilds a Hugging Face model (config, tokenizer,
# generation settings): a Hugging Face model directory binds them in meta["files"]; `load` refuses one of
# these that is unbound, missing or changed.
HF_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.*",
    "merges.txt",
    "*.model",
    "chat_template*",
    "preprocessor_config.json",
)
_UNVERIFIED: contextvars.ContextVar[bool] = contextvars.ContextVar("trainlock_unverified", default=False)


@contextlib.contextmanager
def unverified_loads():
    """Within it, `load` warns instead of refusing a model whose binding is missing or broken (the CLI's
    --unverified, for commands that only read a model)."""
    token = _UNVERIFIED.set(True)
    try:
        yield
    finally:
        _UNVERIFIED.reset(token)


def bound_files(directory: str | Path) -> dict[str, str]:
    """{file name: SHA-256} of every file in `directory` that transformers reads (`HF_FILES`)."""
    directory = Path(directory)
    return {f.name: _sha256(f) for f in sorted(directory.iterdir()) if f.is_file() and _hf_file(f.name)}


def _hf_file(name: str) -> bool:
    import fnmatch

    return any(fnmatch.fnmatch(name, pattern) for pattern in HF_FILES)


def binding_problems(path: str | Path, meta: dict | None = None, header: dict | None = None) -> list[str]:
    """What is wrong with the binding of a model directory's record and files to its weights, one line each
    (empty: all bound). Checked: weights_sha256 is recorded and is the file's, the record hash in the
    safetensors header is that of trainlock.json (an edited, added or removed field is named), and for a
    Hugging Face model every file transformers reads (config.json, tokenizer, generation config) is bound."""
    path = Path(path)
    meta = read_meta(path) if meta is None else meta
    header = read_header(path) if header is None else header
    out = []
    expected = meta.get("weights_sha256")
    if not expected:
        out.append(f"{META} records no weights_sha256, so {WEIGHTS} cannot be checked")
    elif _sha256(path / WEIGHTS) != expected:
        out.append(f"{WEIGHTS}: SHA-256 differs from the weights_sha256 recorded in {META}")
    want = header.get("record_sha256")
    if want is None:
        out.append(
            f"the claims in {META} are not bound to the weights (saved by trainlock "
            f"{meta.get('trainlock_version', '< 0.2.0')}, before records were bound)"
        )
    elif record_hashes(meta)["record"] != want:
        out += [f"{META} field {k!r} was {how} after saving" for k, how in changed_fields(header, meta)]
    return out + file_problems(path, meta)


def file_problems(path: str | Path, meta: dict) -> list[str]:
    """For a Hugging Face model: each file transformers reads that is unbound, missing or changed since saving."""
    path = Path(path)
    arch = meta.get("architecture")
    if not (isinstance(arch, dict) and arch.get("name") == "hf"):
        return []
    files = meta.get("files")
    if not isinstance(files, dict):
        return [
            f"config.json and the tokenizer files are not bound to the weights (saved by trainlock "
            f"{meta.get('trainlock_version', '?')}, before they were bound)"
        ]
    out = []
    present = {f.name for f in path.iterdir() if f.is_file() and _hf_file(f.name)}
    for name in sorted(set(files) | present):
        if name not in files:
            out.append(f"{name} was added after saving: it is not bound to the weights")
        elif not (path / name).is_file():
            out.append(f"{name} is missing (bound to the weights when the model was saved)")
        elif _sha256(path / name) != files[name]:
            out.append(f"{name} was changed after saving: its SHA-256 differs from the one bound to the weights")
    return out


def changed_fields(header: dict, meta: dict) -> list[tuple[str, str]]:
    """[(field, "edited" | "added" | "removed")] where trainlock.json differs from the record bound in the header."""
    got = record_hashes(meta)
    try:
        fields = json.loads(header.get("record_fields") or "{}")
    except json.JSONDecodeError:
        fields = {}
    if not isinstance(fields, dict):
        fields = {}
    changed = sorted(k for k in set(fields) | set(got["fields"]) if fields.get(k) != got["fields"].get(k))
    whole = {k for k in changed if "." not in k and (k not in fields or k not in got["fields"])}  # added / removed
    named = sorted(
        whole | {k for k in changed if k.split(".")[0] not in whole and not any(c.startswith(k + ".") for c in changed)}
    )
    if not named:
        return [("(the header's field list)", "edited")]
    return [(k, "added" if k not in fields else "removed" if k not in got["fields"] else "edited") for k in named]


def check_binding(path: str | Path, unverified: bool | None = None, meta: dict | None = None) -> list[str]:
    """Raise ArtifactError naming the first problem of `binding_problems`; with `unverified` (default: inside
    `unverified_loads()`) log each problem as a warning instead. Returns the problems."""
    path = Path(path)
    problems = binding_problems(path, meta)
    if not problems:
        return []
    if unverified is None:
        unverified = _UNVERIFIED.get()
    if unverified:
        for p in problems:
            logger.warning("%s: UNVERIFIED: %s", path, p)
        return problems
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise BindingError(f"{path}: {problems[0]}{more}; {_rebind_hint(problems, path)}")


def _rebind_hint(problems: list[str], path: Path) -> str:
    if all("before" in p for p in problems):  # written by an older trainlock: nothing was changed, just unbound
        return (
            f"load it with --unverified (Python: load(path, unverified=True)) to use it as it is, or, once you "
            f"trust its files, bind them by saving it again: trainlock.save(*trainlock.load({str(path)!r}, "
            f"unverified=True), {str(path)!r})"
        )
    return (
        "refusing a model whose claims or files no longer match its weights (`trainlock verify` lists every "
        "difference); --unverified (Python: unverified=True) loads it anyway, with a warning"
    )


def architecture_of(meta: dict) -> tuple[str, str] | None:
    """(architecture name, its defining settings as text) of a record, for telling models apart; None when
    it records none. Hugging Face models compare by class; the others by name and kwargs."""
    arch = meta.get("architecture")
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        return None
    kwargs = arch.get("kwargs") if isinstance(arch.get("kwargs"), dict) else {}
    if arch["name"] == "hf":
        return "hf", str(kwargs.get("class"))
    return arch["name"], canonical_json(kwargs)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def save(model: nn.Module, path: str | Path, meta: dict | None = None, files: dict[str, str] | None = None) -> Path:
    """Write `model` and `meta` to directory `path` (created). Returns the directory.

    `meta` must be JSON-serializable (tensors, tuples and dataclasses are converted); a value that is
    not, or a field `load` would refuse (e.g. a task that is not a name), raises ValueError before anything
    is written. An existing `path` that is not a directory is refused. The directory is written complete or
    not at all: a killed save leaves the previous directory (or none) in place, and files of the user's
    already in the directory are kept. `files`: {name: text} written beside the weights in the same step
    (e.g. a release's model card)."""
    path = Path(path)
    files = dict(files or {})
    for name in files:
        if not name or "/" in name or "\\" in name or name.startswith(".") or name in (WEIGHTS, META):
            raise ValueError(f"save: {name!r} cannot be an extra file name (a plain name, not {WEIGHTS} or {META})")
    if path.exists() and not path.is_dir():
        raise ValueError(f"save: {path} exists and is not a directory; nothing was written (choose another path)")
    from ..train import distributed

    if not distributed.is_main():  # under torchrun every rank holds the same model; rank 0 writes it
        return path
    hf = isinstance(model, HFClassifier)
    inner = model.model if hf else model  # a Hugging Face model is written as transformers writes it
    # clone: tensors that share storage (tied weights) cannot be written as views
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in inner.state_dict().items()}
    meta = dict(meta or {})
    from ..models.compensated import structure_meta  # inserted layers (specdef-reparam), rebuilt by load

    structure = structure_meta(model)
    meta.pop("structure", None)
    if structure["wrappers"] or structure.get("dlr"):
        meta["structure"] = structure
    meta["hashes"] = state_hashes(tensors)
    meta.update(
        trainlock_version=__version__,
        format=FORMAT,
        architecture=(model.architecture() if hf else architecture(model)) or meta.get("architecture"),
    )
    try:
        meta = json.loads(canonical_json(meta))  # what trainlock.json will hold, exactly
    except (TypeError, ValueError) as e:
        raise ValueError(f"save: the metadata is not JSON-serializable ({e}); nothing was written") from None
    meta.pop("weights_sha256", None)
    problem = record_problem(meta)
    if problem:  # what load would refuse is refused here, before anything is written
        raise ValueError(f"save: {problem}; nothing was written")
    header = header_metadata(meta)

    def build(tmp: Path) -> None:
        for name, text in files.items():
            (tmp / name).write_text(text)
        if hf:  # config.json and the tokenizer: transformers' from_pretrained loads the directory as it is
            model.model.config.architectures = [type(model.model).__name__]
            model.model.config.save_pretrained(tmp)
            if model.tokenizer is not None:
                model.tokenizer.save_pretrained(tmp)
            generation = getattr(model.model, "generation_config", None)
            if generation is not None and getattr(model.model, "can_generate", lambda: False)():
                generation.save_pretrained(tmp)
            meta["files"] = bound_files(tmp)  # bound by the record hash like any field (see load)
            final_header = header_metadata(meta)
        else:
            final_header = header
        save_file(tensors, str(tmp / WEIGHTS), metadata=final_header)
        meta["weights_sha256"] = _sha256(tmp / WEIGHTS)
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))

    return replace_dir(path, build)  # complete or not at all, also over an existing model directory


def canonical_json(obj) -> str:
    """The JSON text written to the header for a meta value: sorted keys, no spaces."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def header_metadata(meta: dict) -> dict[str, str]:
    """The safetensors header metadata for `meta` (complete but for weights_sha256)."""
    header = {
        "trainlock_version": __version__,
        "format": "pt",  # what transformers requires of a safetensors file it loads
        "trainlock_format": str(FORMAT),
        "state_sha256": str(meta["hashes"]["state"]),
        "certificates": canonical_json(meta.get("certificates") or []),
        "locks": canonical_json(meta.get("locks") or []),
    }
    if meta.get("conservation") is not None:
        header["conservation"] = canonical_json(meta["conservation"])
    bound = record_hashes(meta)
    header["record_sha256"] = bound["record"]
    header["record_fields"] = canonical_json(bound["fields"])
    return header


def read_header(path: str | Path) -> dict:
    """The safetensors header metadata (a dict of strings; {} when there is none).

    `path` is a model directory or a .safetensors file. Raises ArtifactError when the file is
    missing or is not a readable safetensors file (bad header, truncated data).
    """
    path = Path(path)
    weights = path / WEIGHTS if path.is_dir() else path
    if not weights.is_file():
        raise ArtifactError(f"{path}: missing {WEIGHTS}")
    try:
        with safe_open(str(weights), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{weights}: unreadable safetensors file ({e})") from None


def _json_default(obj):
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):  # e.g. a lock's Certificate
        return dataclasses.asdict(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to trainlock.json")


def read_meta(path: str | Path) -> dict:
    """The parsed `trainlock.json` of a model directory."""
    path = Path(path)
    if not path.is_dir():
        left = stale_copies(path, complete=_loadable) if not path.exists() else []
        hint = f"; a complete copy from an interrupted save is at {left[0]}" if left else ""
        raise ArtifactError(f"{path}: not a model directory (expected {WEIGHTS} and {META} inside){hint}")
    meta_file = path / META
    if not meta_file.is_file():
        raise ArtifactError(f"{path}: missing {META}")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{meta_file}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{meta_file}: expected a JSON object")
    problem = record_problem(meta)
    if problem:
        raise ArtifactError(f"{meta_file}: {problem}")
    return meta


RECORD_TYPES = (
    ("task", (str,), "a task name"),
    ("locks", (list,), "a list of {type, config}"),
    ("certificates", (list,), "a list"),
    ("metrics", (dict,), "an object"),
    ("hashes", (dict,), "an object"),
    ("lock", (dict,), "an object"),
)


def record_problem(meta: dict) -> str | None:
    """What `read_meta` refuses in a parsed trainlock.json (a field of the wrong type), or None. `save` checks the
    same before writing, so it never writes a directory that `load` then refuses."""
    for key, kinds, need in RECORD_TYPES:
        if meta.get(key) is not None and not isinstance(meta[key], kinds):
            return f"{key!r} must be {need}, got {_clip(meta[key])}"
    return None


def _loadable(directory: Path) -> bool:
    """Whether an interrupted save's copy is complete: its record reads and its weights match the recorded hash."""
    try:
        meta = read_meta(directory)
        weights = directory / WEIGHTS
        return bool(meta.get("weights_sha256")) and weights.is_file() and _sha256(weights) == meta["weights_sha256"]
    except (ArtifactError, OSError):
        return False


def _build_checked(arch, tensors: dict, where: str) -> nn.Module:
    """Build the recorded architecture, after checking on the meta device (no memory) that its parameter
    shapes are those of the weights file: absurd declared sizes fail here, not after a huge allocation."""
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str) or not isinstance(arch.get("kwargs"), dict):
        raise ArtifactError(
            f'{where}{META}: \'architecture\' must be {{"name": str, "kwargs": {{...}}}}, got {_clip(arch)}'
        )
    if arch["name"] not in MODELS:
        raise ArtifactError(
            f"{where}{META}: unknown architecture {arch['name']!r}; built in: "
            f"{', '.join(MODELS.names())} (pass the module for others: load(path, model=...))"
        )
    try:
        with torch.device("meta"):
            skeleton = build(arch["name"], **arch["kwargs"])
    except (ValueError, TypeError, RuntimeError) as e:
        raise ArtifactError(f"{where}{META}: cannot build {arch['name']!r} from its recorded kwargs ({e})") from None
    shapes = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    bad = [k for k in shapes if k in tensors and shapes[k] != tuple(tensors[k].shape)]
    if bad:
        k = bad[0]
        raise ArtifactError(
            f"{where}{META} declares {arch['name']} with {k} of shape {list(shapes[k])}, but "
            f"{WEIGHTS} holds {list(tensors[k].shape)}: the metadata does not describe these weights"
        )
    return build(arch["name"], **arch["kwargs"])


def _rebuild_hf(
    tensors: dict, arch: dict, directory: Path | None, where: str, structure: dict | None = None
) -> nn.Module:
    if directory is None or not (Path(directory) / "config.json").is_file():
        raise ArtifactError(f"{where}a Hugging Face model needs its config.json beside {WEIGHTS}")
    kwargs = arch.get("kwargs") if isinstance(arch.get("kwargs"), dict) else {}
    try:
        skeleton = build_from_config(directory, kwargs, meta_device=True)
        if structure:
            restore_structure(skeleton, structure)
        shapes = {k: tuple(v.shape) for k, v in skeleton.model.state_dict().items()}
        bad = [k for k in shapes if k in tensors and shapes[k] != tuple(tensors[k].shape)]
        if bad:
            raise ArtifactError(
                f"{where}config.json declares {bad[0]} of shape {list(shapes[bad[0]])}, but {WEIGHTS} "
                f"holds {list(tensors[bad[0]].shape)}: the config does not describe these weights"
            )
        model = build_from_config(directory, kwargs)
        if structure:
            restore_structure(model, structure)
    except ArtifactError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{where}cannot rebuild the Hugging Face model from config.json ({e})") from None
    try:
        model.model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"{where}weights do not fit the model: {e}") from None
    return model


def _clip(value, n: int = 60) -> str:
    s = repr(value)
    return s if len(s) <= n else s[: n - 3] + "..."


def rebuild(
    tensors: dict, meta: dict, model: nn.Module | None = None, where: str = "", directory: Path | None = None
) -> nn.Module:
    """Build the recorded architecture (or take `model`), re-insert recorded layers, load `tensors`.
    A Hugging Face model is rebuilt from the config and tokenizer in `directory`."""
    where = f"{where}: " if where else ""
    arch = meta.get("architecture")
    if model is None and isinstance(arch, dict) and arch.get("name") == "hf":
        return _rebuild_hf(tensors, arch, directory, where, meta.get("structure"))
    if model is None:
        if not arch:
            raise ArtifactError(f"{where}holds a custom model; pass the module: load(path, model=...)")
        model = _build_checked(arch, tensors, where)
    if meta.get("structure"):
        try:
            restore_structure(model, meta["structure"])
        except ValueError as e:
            raise ArtifactError(f"{where}{e}") from None
        except (KeyError, TypeError, AttributeError) as e:
            raise ArtifactError(
                f"{where}{META}: malformed 'structure' ({type(e).__name__}: {e}); expected "
                f'{{"wrappers": [{{"name", "in", "out", "bias"}}, ...]}}'
            ) from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"{where}weights do not fit the model: {e}") from None
    return model


def load(path: str | Path, model: nn.Module | None = None, unverified: bool | None = None) -> tuple[nn.Module, dict]:
    """Load a model directory. Built-in architectures are rebuilt; pass `model` for any other.

    Refuses (ArtifactError) a directory whose binding is missing or broken (`binding_problems`: no or another
    weights_sha256, a field of trainlock.json edited, added or removed since saving, a Hugging Face config or
    tokenizer file unbound, missing or changed) unless `unverified` (default: inside `unverified_loads()`),
    then it logs a warning per problem."""
    path = Path(path)
    meta = read_meta(path)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise ArtifactError(f"{path}: missing {WEIGHTS}")
    expected = meta.get("weights_sha256")
    if expected and _sha256(weights) != expected:
        raise ArtifactError(
            f"{weights}: SHA-256 differs from the one recorded in {META}; the file is corrupt, "
            f"truncated, or was changed after saving"
        )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{weights}: unreadable safetensors file ({e})") from None
    model = rebuild(tensors, meta, model, where=str(path), directory=path)
    check_binding(path, unverified, meta)  # after the rebuild: a malformed field gets its own message first
    return model, meta
