"""The token cache: a text task is tokenized once per tokenizer and max_length; a hit gives the same tensors, a
changed input another key, a broken entry is rebuilt with a warning. Tiny tokenizers built here, no downloads."""

import copy
import warnings

import pytest
import torch

pytest.importorskip("transformers")  # the `text` extra; installed by `make test`

from tokenizers import Tokenizer, pre_tokenizers
from tokenizers import models as tok_models
from transformers import PreTrainedTokenizerFast

from hf_tiny import WORDS, tiny, toy_task
from trainlock.tasks import token_cache
from trainlock.tasks.token_cache import TokenCacheWarning, cache_key, tokenizer_fingerprint


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Each test its own cache directory."""
    root = tmp_path / "tokens"
    monkeypatch.setenv(token_cache.ENV, str(root))
    return root


class Counting:
    """A tokenizer that counts its calls (everything else is the wrapped tokenizer's)."""

    def __init__(self, tok):
        self.tok, self.calls = tok, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tok(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tok, name)


def _tokenizer(extra: tuple[str, ...] = ()):
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS, *extra])}
    tok = Tokenizer(tok_models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )


def _entries(root):
    return sorted(root.rglob("*.safetensors"))


def test_a_hit_returns_identical_tensors_without_tokenizing(cache):
    text = toy_task(60)
    tok = Counting(_tokenizer())
    first = text.encode(tok, 12)
    assert tok.calls == 2 and len(_entries(cache)) == 2  # train and test, one entry each
    again = text.encode(tok, 12)
    assert tok.calls == 2  # not tokenized again
    for a, b in ((first.x_train, again.x_train), (first.x_test, again.x_test)):
        assert a.dtype == b.dtype == torch.int64 and torch.equal(a, b)
    fresh = text.encode(tok, 12, cache=False)  # what tokenizing gives, the cache left alone
    assert torch.equal(fresh.x_train, first.x_train) and torch.equal(fresh.x_test, first.x_test)
    assert tok.calls == 4


def test_max_length_tokenizer_and_texts_change_the_key():
    texts, tok = ["the movie was good", "a bad plot"], _tokenizer()
    key = cache_key(texts, None, tok, 12)
    assert cache_key(texts, None, tok, 12) == key
    assert cache_key(texts, None, tok, 16) != key  # another max length
    assert cache_key(texts, None, _tokenizer(extra=("plotline",)), 12) != key  # another vocabulary
    other = _tokenizer()
    other.padding_side = "left"
    assert cache_key(texts, None, other, 12) != key  # another padding side
    assert cache_key(["the movie was good", "a bad plot!"], None, tok, 12) != key  # other texts
    assert cache_key(texts, ["x", "y"], tok, 12) != key  # second texts
    assert cache_key(texts[::-1], None, tok, 12) != key  # another order
    # what a call leaves in the fast tokenizer (its truncation / padding state) is not part of the key
    tok(texts, padding="max_length", truncation=True, max_length=7)
    assert cache_key(texts, None, tok, 12) == key
    assert tok.backend_tokenizer.truncation["max_length"] == 7 and tok.backend_tokenizer.padding["length"] == 7
    assert tokenizer_fingerprint(copy.deepcopy(tok)) == tokenizer_fingerprint(tok)


def test_a_changed_max_length_or_tokenizer_is_a_miss(cache):
    text = toy_task(40)
    a = text.encode(_tokenizer(), 12)
    b = text.encode(_tokenizer(), 8)
    c = text.encode(_tokenizer(extra=("movie!",)), 12)
    assert a.x_train.shape[-1] == 12 and b.x_train.shape[-1] == 8 and c.x_train.shape[-1] == 12
    assert len(_entries(cache)) == 6


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_corrupted_entry_is_rebuilt_with_a_warning(cache, damage):
    text = toy_task(40)
    tok = Counting(_tokenizer())
    good = text.encode(tok, 12)
    path = _entries(cache)[0]
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-3] ^= 0x01  # one token id changed: the file still reads, its checksum does not match
    else:
        data = bytearray(b"not a safetensors file")
    path.write_bytes(bytes(data))
    with pytest.warns(TokenCacheWarning, match="not usable"):
        rebuilt = text.encode(tok, 12)
    assert tok.calls == 3  # the damaged split tokenized again, the other read from the cache
    assert torch.equal(rebuilt.x_train, good.x_train) and torch.equal(rebuilt.x_test, good.x_test)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the entry was replaced: read again without a warning
        again = text.encode(tok, 12)
    assert tok.calls == 3 and torch.equal(again.x_train, good.x_train)


def test_the_cache_can_be_turned_off(cache, monkeypatch):
    monkeypatch.setenv(token_cache.ENV, "off")
    tok = Counting(_tokenizer())
    toy_task(20).encode(tok, 12)
    toy_task(20).encode(tok, 12)
    assert tok.calls == 4 and not cache.exists()


def test_a_model_copy_shares_its_tokenizer_and_tokens_not_its_weights():
    model = tiny("bert")
    text = toy_task(40)
    tokens = model.encode_task(text)
    clone = copy.deepcopy(model)
    assert clone.tokenizer is model.tokenizer
    assert clone.encode_task(text) is tokens  # the tokenized task travels with the copy
    w = next(clone.parameters())
    assert w.data_ptr() != next(model.parameters()).data_ptr()
    with torch.no_grad():
        w.add_(1.0)
    assert not torch.equal(w, next(model.parameters()))
    x = tokens.x_test[:4]
    assert model(x).shape == clone(x).shape == (4, 2)


def test_a_cache_that_cannot_be_written_is_bypassed(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(token_cache.ENV, str(blocker / "tokens"))
    tok = Counting(_tokenizer())
    got = toy_task(20).encode(tok, 12)
    assert tok.calls == 2 and torch.equal(got.x_train, toy_task(20).encode(_tokenizer(), 12, cache=False).x_train)
