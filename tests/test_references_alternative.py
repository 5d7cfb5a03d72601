"""The `alternative:MODEL` reference attacker (another open model, probed and fine-tuned like the released one):
`NAME:ARG` lookups, one-line validation errors before any work, its runs on digits with a registered model built
randomly initialized (never a download), the text path through a tiny Hugging Face directory's own tokenizer, and
the CLI's --reference-model."""

import functools

import pytest
import torch

pytest.importorskip("sklearn")

import trainlock as tl
from trainlock.attacks.references import (
    REFERENCES,
    ReferenceTarget,
    check_reference,
    run_reference,
    split_reference,
)
from trainlock.attacks.references.alternative import Alternative
from trainlock.cli import main
from trainlock.red_team.uplift import reference_runs
from trainlock.tasks import TextTask


@pytest.fixture(scope="module")
def small(digits):
    return digits.subset(120, 60)


def test_name_parsing_binds_the_argument():
    assert split_reference("alternative:effnet-lite1") == ("alternative", "effnet-lite1")
    assert split_reference("alternative:hf:/m/bert") == ("alternative", "hf:/m/bert")  # the first ':' only
    assert split_reference("classical") == ("classical", None)
    got = REFERENCES.get("alternative:mlp")
    assert isinstance(got, functools.partial) and got.keywords == {"model": "mlp"}
    assert got().model == "mlp" and "alternative:anything" in REFERENCES and "nope:x" not in REFERENCES
    assert REFERENCES.get("classical") is REFERENCES.get("classical")  # plain names unchanged


@pytest.mark.parametrize(
    "name, says",
    [
        ("nope", "unknown reference attacker 'nope'"),
        ("alternative:nonexist", "unknown model 'nonexist'"),
        ("alternative", "name the model"),
        ("alternative:", "name the model"),
        ("classical:x", "takes no argument"),
    ],
)
def test_check_reference_refuses_with_one_line(name, says):
    with pytest.raises(ValueError, match=says) as e:
        check_reference(name)
    assert "\n" not in str(e.value)


def test_hf_dir_needs_config_json(tmp_path):
    with pytest.raises(ValueError, match=r"no config\.json"):
        check_reference(f"alternative:hf:{tmp_path}")
    (tmp_path / "config.json").write_text("{}")
    check_reference(f"alternative:hf:{tmp_path}")  # a directory with config.json passes (built only when run)


def test_runs_probe_and_each_rate(small):
    # through reference_runs: the red team's, headstart's and the attack command's path
    runs = reference_runs(ReferenceTarget(small, steps=5, seed=0), ("alternative:mlp",))
    assert [r["attacker"] for r in runs] == [
        "alternative:mlp:probe",
        "alternative:mlp:adamw@0.0001",
        "alternative:mlp:adamw@0.001",
    ]
    for r in runs:
        assert r["error"] is None and 0.0 <= r["accuracy"] <= 1.0 and r["wall_s"] > 0 and r["n_train"] == 120
    assert runs[1]["details"]["steps"] == 5 and runs[0]["details"]["layer"]
    # options: one rate, no probe, its own step budget (the target's is only the default)
    one = Alternative(model="mlp", lrs=(1e-2,), probe=False, steps=3)(ReferenceTarget(small, steps=50))
    assert [r.attacker for r in one] == ["alternative:mlp:adamw@0.01"] and one[0].details["steps"] == 3


def test_failures_are_rows_not_exceptions(small):
    tokens = tl.tasks.Task(
        "t", torch.zeros(4, 3, 5, dtype=torch.long), torch.tensor([0, 1, 0, 1]), torch.zeros(2, 3, 5, dtype=torch.long),
        torch.tensor([0, 1]), 2, meta={"text": True},
    )  # fmt: skip
    (row,) = run_reference("alternative:mlp", ReferenceTarget(tokens))
    assert row.attacker == "alternative:mlp" and "raw texts" in row.error and row.accuracy is None
    (row,) = run_reference("alternative:nonexist", ReferenceTarget(small))  # the runner never raises either
    assert "unknown model" in row.error
    (row,) = run_reference(
        "alternative:mlp", ReferenceTarget(small, text=TextTask("t", ["a", "b"], [0, 1], ["c"], [0], ["x", "y"]))
    )
    assert row.error  # an image model on a text task


def test_text_uses_the_alternatives_own_tokenizer(tmp_path):
    pytest.importorskip("transformers")
    from transformers import BertConfig, BertForSequenceClassification

    from hf_tiny import tokenizer, toy_task

    tok = tokenizer()
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,  # the alternative reads up to 128 tokens (hf:DIR's default)
    )
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    text = toy_task(60)
    released_tokens = tl.tasks.Task(
        text.name, torch.zeros(len(text.labels_train), 3, 4, dtype=torch.long), torch.tensor(text.labels_train),
        torch.zeros(len(text.labels_test), 3, 4, dtype=torch.long), torch.tensor(text.labels_test), 2,
        meta={"text": True},
    )  # fmt: skip
    name = f"alternative:hf:{tmp_path / 'bert'}"
    runs = Alternative(model=f"hf:{tmp_path / 'bert'}", lrs=(1e-3,))(
        ReferenceTarget(released_tokens, text=text, steps=2)
    )
    assert [r.attacker for r in runs] == [f"{name}:probe", f"{name}:adamw@0.001"]
    assert all(r.error is None and 0.0 <= r.accuracy <= 1.0 for r in runs), [r.error for r in runs]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("alt") / "base"
    tl.save(tl.models.build("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[8]), d, {"task": "digits"})
    return d


@pytest.mark.parametrize(
    "argv, says",
    [
        (["attack", "B", "--task", "digits", "--reference-model", "nonexist"], "unknown model 'nonexist'"),
        (["attack", "B", "--task", "digits", "--reference-model", "mlp", "hf:/no/such"], "no config.json"),
        (["headstart", "B", "--task", "digits", "--reference-model", "nonexist"], "unknown model 'nonexist'"),
    ],
)
def test_cli_refuses_a_bad_reference_model_before_work(argv, says, base_dir, tmp_path, capsys):
    argv = [str(base_dir) if a == "B" else a for a in argv]
    out = tmp_path / "o"
    argv += ["--json", str(tmp_path / "r.json")] + (["--out", str(out)] if argv[0] == "headstart" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r.json").exists() and not out.exists()
