"""Hugging Face transformers as trainlock models, with tiny randomly initialized BERT, Llama and GPT-2
configs built here (no downloads): lockable discovery, a lock on a toy text task, save -> transformers
from_pretrained -> identical logits, text / image refusals."""

import json

import pytest
import torch

pytest.importorskip("transformers")  # the `text` extra; installed by `make test`

from transformers import AutoModelForSequenceClassification

import trainlock as tl
from hf_tiny import WORDS, tiny, toy_task
from trainlock.certify.verify import verify
from trainlock.locks import SpecDefConfig, find_lockable, specdef_loop
from trainlock.models.hf import trim_padding
from trainlock.tasks import TaskDataError
from trainlock.tasks.text import from_rows, load_csv, load_jsonl


@pytest.fixture(scope="module")
def toy():
    return toy_task()


@pytest.mark.parametrize(
    "kind, expected",
    [
        (
            "bert",
            {"query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense", "classifier"},
        ),
        ("llama", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "score"}),
        ("gpt2", {"c_attn", "attn.c_proj", "c_fc", "mlp.c_proj", "score"}),  # Conv1D weights, stored (in, out)
    ],
)
def test_lockable_weights_are_attention_and_mlp_not_embeddings_or_norms(kind, expected):
    names = [lk.name for lk in find_lockable(tiny(kind))]
    assert all(any(e in n for n in names) for e in expected), names
    assert not [n for n in names if "embed" in n or "norm" in n or "wte" in n or "wpe" in n or "ln_" in n]


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_train_lock_save_and_from_pretrained(kind, toy, tmp_path):
    model = tiny(kind)
    tl.train.fit(
        model, toy, tl.LoopConfig(optimizer="adamw", lr=1e-2, epochs=4, batch_size=16, device="cpu"), progress=False
    )
    base_acc = tl.evaluate(model, toy)
    assert base_acc > 0.9
    cfg = SpecDefConfig(
        loop=specdef_loop(lr=5.0, epochs=3, batch_size=16, device="cpu"), retain="ce+kl", alpha=0.5, top_k=2
    )
    res = tl.lock(model, cfg, retain=toy)
    rep = res.report
    assert rep.sigma_after["mean_topk"] > 1.5 * rep.sigma_before["mean_topk"]  # the lock inflates sigma
    assert tl.evaluate(res.model, toy) >= base_acc - 0.05  # and keeps the task
    d = tl.save(res.model, tmp_path / "locked", {"task": "toy-sentiment", **res.record})
    assert {"config.json", "model.safetensors", "tokenizer.json", "trainlock.json"} <= {p.name for p in d.iterdir()}
    x = toy.encode(model.tokenizer, 8).x_test[:6]
    ours, meta = tl.load(d)
    hf = AutoModelForSequenceClassification.from_pretrained(d, local_files_only=True).eval()
    cut = trim_padding(x)  # what our wrapper feeds the model (dynamic padding)
    assert cut.shape[-1] < x.shape[-1]  # so both lengths below are exercised
    kw = {"input_ids": cut[:, 0], "attention_mask": cut[:, 1]}
    full = {"input_ids": x[:, 0], "attention_mask": x[:, 1]}
    if kind == "bert":
        kw["token_type_ids"], full["token_type_ids"] = cut[:, 2], x[:, 2]
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), hf(**kw).logits)  # the same computation, bit for bit
        # padded positions are masked: the untrimmed batch gives the same logits up to float rounding (the
        # attention's reductions run over another length; 2e-8 apart on an AVX2 CPU, equal on an AVX-512 one)
        torch.testing.assert_close(ours(x), hf(**full).logits, rtol=1e-5, atol=1e-6)
        assert torch.equal(ours(x), res.model.eval()(x))
    assert meta["architecture"]["name"] == "hf" and hf.config.num_labels == 2
    assert json.loads((d / "config.json").read_text())["architectures"] == [type(model.model).__name__]
    assert verify(d).ok


def test_text_and_image_refuse_each_other(toy, digits):
    with pytest.raises(TaskDataError, match="is text, but the model"):
        tl.evaluate(tl.models.build("mlp", input_shape=[1, 8, 8], num_classes=10), toy)
    with pytest.raises(TaskDataError, match="the model is a text model"):
        tl.evaluate(tiny("bert"), digits)


def test_attack_with_a_new_label_set_updates_the_saved_config(toy, tmp_path):
    rows = [{"text": w, "label": i % 3} for i, w in enumerate(WORDS * 10)]
    three = from_rows("three", rows, "toy")
    res = tl.attack(
        tiny("bert"),
        tl.FineTuneConfig(loop=tl.LoopConfig(optimizer="adamw", lr=1e-2, max_steps=5, batch_size=16, device="cpu")),
        three,
    )
    assert res.model.num_classes == 3
    d = tl.save(res.model, tmp_path / "m", {"task": "three"})
    assert AutoModelForSequenceClassification.from_pretrained(d, local_files_only=True).config.num_labels == 3


def test_csv_and_jsonl_loaders(tmp_path):
    (tmp_path / "t.csv").write_text("text,label,split\nhello there,spam,train\nhi,ham,train\nyo,spam,test\n")
    t = load_csv(tmp_path / "t.csv")
    assert t.label_names == ["ham", "spam"] and t.labels_train == [1, 0] and t.texts_test == ["yo"]
    rows = [{"text": f"t{i}", "text_pair": f"p{i}", "label": i % 2} for i in range(10)]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    t = load_jsonl(tmp_path / "t.jsonl")
    assert len(t.texts_train) == 8 and len(t.texts_test) == 2 and t.pairs_train is not None  # seeded 80/20
    assert load_jsonl(tmp_path / "t.jsonl").texts_test == t.texts_test


@pytest.mark.parametrize(
    "name, content, says",
    [
        ("a.csv", "words,label\nhi,1\n", "must name the columns 'text' and 'label'"),
        ("b.csv", "text,label\nhi,1\n,0\n", "row 3: column 'text' is missing or empty"),
        ("c.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 0\n', "line 2: not valid JSON"),
        ("d.jsonl", '{"text": "a", "label": [1]}\n', "line 1: column 'label' must be an integer or a string"),
        ("e.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 1}\n', "a classifier needs at least 2"),
        ("f.csv", "text,label,split\na,1,train\nb,0,valid\n", "split must be 'train' or 'test'"),
    ],
)
def test_bad_text_files_name_the_row_and_column(name, content, says, tmp_path):
    (tmp_path / name).write_text(content)
    with pytest.raises(TaskDataError, match=says):
        (load_csv if name.endswith(".csv") else load_jsonl)(tmp_path / name)


@pytest.mark.slow
def test_minilm_end_to_end(tmp_path):
    """The real MiniLM-L6 (22M parameters) on rotten-tomatoes, a few steps each (about a minute)."""
    task = tl.tasks.get("rotten-tomatoes").subset(400, 200)
    model = tl.models.build("minilm-l6", num_classes=2, max_length=32)
    tl.train.fit(model, task, tl.LoopConfig(optimizer="adamw", lr=5e-5, max_steps=10, batch_size=16), progress=False)
    res = tl.lock(
        model,
        SpecDefConfig(loop=specdef_loop(max_steps=5, batch_size=16), retain="ce+kl", alpha=0.99, top_k=2),
        retain=task,
    )
    d = tl.save(res.model, tmp_path / "locked", {"task": "rotten-tomatoes", **res.record})
    assert verify(d).ok


def test_lora_attack_trains_adapters_and_merges(toy):
    model = tiny("bert")
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    cfg = tl.FineTuneConfig(
        loop=tl.LoopConfig(optimizer="adamw", lr=3e-3, epochs=6, batch_size=16, device="cpu"), lora=4
    )
    res = tl.attack(model, cfg, toy)
    merged = res.model.model
    assert type(merged).__name__ == "BertForSequenceClassification"  # plain transformers model again
    assert not [n for n, _ in merged.named_parameters() if "lora" in n]
    after = merged.state_dict()
    assert set(after) == set(before)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("query" in k or "value" in k for k in changed) and any("classifier" in k for k in changed)
    assert not any("embeddings" in k for k in changed)  # only adapted maps and the head moved
    assert res.accuracy > 0.9


def test_cli_attack_records_the_scratch_baseline(toy, tmp_path):
    import numpy as np  # noqa: F401

    from trainlock.cli import main

    rows = [
        {"text": t, "label": int(y)}
        for t, y in zip(toy.texts_train + toy.texts_test, toy.labels_train + toy.labels_test, strict=False)
    ]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    tl.save(tiny("bert"), tmp_path / "m", {"task": f"jsonl:{tmp_path / 't.jsonl'}"})
    argv = [
        "attack",
        str(tmp_path / "m"),
        "--task",
        f"jsonl:{tmp_path / 't.jsonl'}",
        "--optimizer",
        "adamw",
        "--lr",
        "0.01",
        "--max-steps",
        "10",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--json",
        str(tmp_path / "a.json"),
    ]
    assert main(argv) == 0
    out = json.loads((tmp_path / "a.json").read_text())
    assert 0 <= out["scratch_accuracy"] <= 1
    ref = out["reference"]  # the best of scratch and the classical reference (TF-IDF + LR on the raw texts)
    assert any(r["attacker"] == "classical:tfidf+lr" and r["accuracy"] is not None for r in ref["runs"])
    assert ref["accuracy"] == max(r["accuracy"] for r in ref["runs"] if r["accuracy"] is not None)
    assert out["uplift"] == pytest.approx(out["accuracy"] - ref["accuracy"])
    assert out["scratch_lr"] == 0.01
    grid = [*argv[:-1], str(tmp_path / "g.json"), "--scratch-lrs", "1e-9", "--test-samples", "7"]
    assert main(grid) == 0
    g = json.loads((tmp_path / "g.json").read_text())
    assert g["scratch_lr"] in (0.01, 1e-9) and g["scratch_accuracy"] >= out["scratch_accuracy"] - 1e-9
    assert round(g["accuracy"] * 7) == pytest.approx(g["accuracy"] * 7)  # 7 test samples
    assert main([*argv, "--no-scratch", "--json", str(tmp_path / "b.json")]) == 0
    assert "scratch_accuracy" not in json.loads((tmp_path / "b.json").read_text())
