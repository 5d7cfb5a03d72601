"""Tiny randomly initialized Hugging Face classifiers (BERT, Llama, GPT-2) and a toy text task, built in the
test process: no downloads. Import after `pytest.importorskip("transformers")`."""

import torch
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers import models as tok_models
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from trainlock.models.hf import HFClassifier
from trainlock.tasks.text import from_rows

WORDS = ["good", "bad", "great", "awful", "fine", "movie", "film", "plot", "the", "a", "is", "was", "not", "very"]


def tokenizer():
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<s>", "</s>", *WORDS])}
    tok = Tokenizer(tok_models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        bos_token="<s>",
        eos_token="</s>",
    )


def tiny(
    kind: str, init: float = 0.02, heads: int = 2, kv_heads: int | None = None, bias: bool = False
) -> HFClassifier:
    """`init`: the weights' init std (transformers' 0.02 makes attention nearly uniform in so small a model,
    so tests of attention transforms use a larger one); heads / kv_heads / bias: Llama's attention layout."""
    torch.manual_seed(0)
    tok = tokenizer()
    if kind == "bert":
        cfg = BertConfig(
            vocab_size=len(tok),
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=heads,
            intermediate_size=32,
            max_position_embeddings=32,
            num_labels=2,
            initializer_range=init,
        )
        model = BertForSequenceClassification(cfg)
    elif kind == "llama":
        cfg = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads or heads,
            intermediate_size=32,
            max_position_embeddings=32,
            num_labels=2,
            pad_token_id=tok.pad_token_id,
            initializer_range=init,
            attention_bias=bias,
        )
        model = LlamaForSequenceClassification(cfg)
    else:
        cfg = GPT2Config(
            vocab_size=len(tok),
            n_embd=16,
            n_layer=2,
            n_head=heads,
            n_positions=32,
            num_labels=2,
            pad_token_id=tok.pad_token_id,
            bos_token_id=4,
            eos_token_id=5,
            initializer_range=init,
        )
        model = GPT2ForSequenceClassification(cfg)
    return HFClassifier(model, tok, max_length=8, source=f"tiny-{kind}")


def toy_rows(n: int = 240) -> list[dict]:
    return [
        {
            "text": f"the movie was {'very ' if i % 3 else ''}{'good' if i % 2 else 'bad'}",
            "label": "pos" if i % 2 else "neg",
        }
        for i in range(n)
    ]


def toy_task(n: int = 240):
    return from_rows("toy-sentiment", toy_rows(n), "toy")
