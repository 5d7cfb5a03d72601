"""Tokenized text tasks cached on disk: each task is tokenized once per tokenizer and sequence length.

`TextTask.encode` asks `encoded(texts, pairs, tokenizer, max_length, build)` for each split; the answer is
the (N, 3, L) int64 tensor of input ids, attention mask and token type ids, from the cache when it holds
this exact input, else built by `build()` and stored. The key is the SHA-256 of

- the texts (and second texts) themselves, in order,
- the tokenizer: its whole serialized definition (vocabulary, normalizer, pre-tokenizer, post-processor:
  what `tokenizer.json` holds; a slow tokenizer's vocabulary and settings), its class, special tokens and
  padding / truncation sides,
- the sequence length, and a format version.

Entries are safetensors files (never pickle) written atomically (`trainlock.atomic`) under
`$TRAINLOCK_TOKEN_CACHE`, else `$TRAINLOCK_DATA/tokens`, else `~/.cache/trainlock/tokens`
(`TRAINLOCK_TOKEN_CACHE=off` turns the cache off). Each file's header repeats its key, shape and a SHA-256 of
its tensors: an entry that cannot be read, or whose contents do not match its header, is rebuilt with a
warning, never used. (Within a process, a model keeps the tasks it tokenized: `HFClassifier.encode_task`.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

FORMAT = 1
ENV = "TRAINLOCK_TOKEN_CACHE"
OFF = ("0", "off", "false", "no", "none")
_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


class TokenCacheWarning(UserWarning):
    """A cache entry could not be used (unreadable or not matching its header): it is rebuilt."""


def cache_dir() -> Path | None:
    """Where entries live (None: the cache is off)."""
    env = os.environ.get(ENV)
    if env is not None and env.strip().lower() in OFF:
        return None
    if env:
        return Path(env).expanduser()
    root = os.environ.get("TRAINLOCK_DATA")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "trainlock") / "tokens"


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _backend_sha(backend) -> str:
    """SHA-256 of a fast tokenizer's serialized definition (what tokenizer.json holds) without the padding and
    truncation state each call sets from its own arguments (cleared while serializing, then restored)."""
    trunc, pad = backend.truncation, backend.padding
    try:
        if trunc is not None:
            backend.no_truncation()
        if pad is not None:
            backend.no_padding()
        text = backend.to_str()
    finally:
        if trunc is not None:
            backend.enable_truncation(**trunc)
        if pad is not None:
            backend.enable_padding(**pad)
    return hashlib.sha256(text.encode()).hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 of what decides the tokens: the serialized tokenizer (as tokenizer.json holds it; a slow tokenizer:
    its vocabulary and init settings), its class, special tokens, padding and truncation sides. The per-call
    padding and truncation state a fast tokenizer keeps from its last call is left out."""
    parts: dict = {
        "class": type(tokenizer).__qualname__,
        "special": {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())},
        "pad_token_id": getattr(tokenizer, "pad_token_id", None),
        "padding_side": getattr(tokenizer, "padding_side", None),
        "truncation_side": getattr(tokenizer, "truncation_side", None),
    }
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        parts["backend"] = _backend_sha(backend)
    else:
        vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
        parts["vocab"] = sorted(vocab.items())
        init = getattr(tokenizer, "init_kwargs", {}) or {}
        parts["init"] = {k: str(v) for k, v in sorted(init.items()) if k not in ("name_or_path", "vocab_file")}
    return _sha(parts)


def cache_key(texts: list[str], pairs: list[str] | None, tokenizer, max_length: int) -> str:
    """The entry's key: texts, second texts, tokenizer and sequence length (see the module docstring)."""
    data = hashlib.sha256()
    for t in texts:
        data.update(t.encode("utf-8", "surrogatepass"))
        data.update(b"\x00")
    data.update(b"\x01pairs\x01" if pairs is not None else b"\x01nopairs\x01")
    for t in pairs or ():
        data.update(t.encode("utf-8", "surrogatepass"))
        data.update(b"\x00")
    return _sha(
        {
            "format": FORMAT,
            "n": len(texts),
            "data": data.hexdigest(),
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "max_length": int(max_length),
        }
    )


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over each column's dtype, shape and bytes (tasks sit below io/, so not io.hashing's)."""
    h = hashlib.sha256()
    for c in _COLUMNS:
        t = tensors[c].detach().cpu().contiguous()
        h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _pack(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """(N, 3, L) int64 -> one compact tensor per column (int32 ids; uint8 where the values fit)."""
    out = {}
    for i, col in enumerate(_COLUMNS):
        v = x[:, i]
        small = v.numel() == 0 or (int(v.min()) >= 0 and int(v.max()) <= 255)
        out[col] = v.to(torch.uint8 if small and col != "input_ids" else torch.int32).contiguous()
    return out


def _unpack(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([tensors[c].long() for c in _COLUMNS], dim=1)


def _read(path: Path, key: str, n: int, max_length: int) -> torch.Tensor:
    """The entry at `path`, checked against its header; ValueError naming what is wrong."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {c: f.get_tensor(c) for c in _COLUMNS}
    except Exception as e:  # a truncated or garbled file: safetensors raises its own errors (and OSError)
        raise ValueError(f"unreadable ({type(e).__name__}: {e})") from None
    if header.get("key") != key or header.get("format") != str(FORMAT):
        raise ValueError("its header names another key or format")
    shapes = {tuple(t.shape) for t in tensors.values()}
    if len(shapes) != 1 or (n and shapes.pop() != (n, max_length)):
        raise ValueError(f"shapes {[tuple(t.shape) for t in tensors.values()]} are not ({n}, {max_length})")
    if header.get("sha256") != _checksum(tensors):
        raise ValueError("its contents do not match the checksum in its header")
    return _unpack(tensors)


def _write(path: Path, key: str, x: torch.Tensor) -> None:
    from safetensors.torch import save_file

    from ..atomic import writing_file

    tensors = _pack(x)
    meta = {"format": str(FORMAT), "key": key, "sha256": _checksum(tensors), "shape": json.dumps(list(x.shape))}
    with writing_file(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def encoded(
    texts: list[str],
    pairs: list[str] | None,
    tokenizer,
    max_length: int,
    build: Callable[[], torch.Tensor],
) -> torch.Tensor:
    """The (N, 3, L) int64 tokens of `texts` (and `pairs`) by `tokenizer` at `max_length`: from the cache, else
    `build()` (then stored). A cache that cannot be read or written is bypassed (a broken entry with a
    TokenCacheWarning) and the tokens are built."""
    root = cache_dir()
    if root is None:
        return build()
    try:
        key = cache_key(texts, pairs, tokenizer, max_length)
    except Exception as e:  # a tokenizer this cannot fingerprint: no caching, never a wrong hit
        logger.debug("token cache: no key (%s: %s); tokenizing", type(e).__name__, e)
        return build()
    path = root / key[:2] / f"{key}.safetensors"
    if path.is_file():
        try:
            return _read(path, key, len(texts), max_length)
        except ValueError as e:
            warnings.warn(
                f"token cache entry {path} is not usable ({e}); tokenizing again and replacing it",
                TokenCacheWarning,
                stacklevel=2,
            )
    x = build()
    try:
        _write(path, key, x)
    except OSError as e:  # a read-only or full disk: the run goes on without the cache
        logger.warning("token cache: cannot write %s (%s)", path, e)
    return x
