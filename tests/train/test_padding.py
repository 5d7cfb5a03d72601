"""Dynamic padding and length-bucketed batches for text: each batch cut to its longest sequence gives the logits of
the batch at max_length; bucketed batches still hold every example once per epoch; the default batches are the
seeded shuffle they always were; a fine-tuning run and a red-team run give the same numbers as before."""

import copy

import pytest
import torch

from trainlock.config import from_dict

pytest.importorskip("transformers")  # the `text` extra; installed by `make test`

from hf_tiny import WORDS, tiny, toy_task
from trainlock.attacks import FineTuneConfig
from trainlock.attacks.finetune import finetune
from trainlock.models.hf import HFClassifier, trim_padding
from trainlock.red_team import Target
from trainlock.red_team.runner import run_spec
from trainlock.red_team.spec import AttackSpec
from trainlock.tasks.text import from_rows
from trainlock.train import LoopConfig, accuracy, batches, fit
from trainlock.train.loop import batch_order, token_lengths


def _long(kind: str) -> HFClassifier:
    """The tiny model of `kind` reading up to 24 tokens."""
    small = tiny(kind, init=0.2)
    return HFClassifier(small.model, small.tokenizer, max_length=24, source=f"tiny-{kind}")


def _varied(n: int = 48):
    """A text task whose sequences have 1 to 20 words."""
    rows = [
        {"text": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(1 + i % 20)), "label": "pos" if i % 3 else "neg"}
        for i in range(n)
    ]
    return from_rows("varied", rows, "varied")


@pytest.mark.parametrize("kind", ["bert", "llama", "gpt2"])
def test_dynamic_padding_gives_the_logits_of_fixed_padding(kind):
    model = _long(kind).eval()
    x = model.encode_task(_varied()).x_train[:12]
    mask = x[:, 1]
    assert (mask.sum(1) < 24).all() and mask.sum(1).min() < mask.sum(1).max()  # padded, to different lengths
    cut = trim_padding(x)
    assert cut.shape[-1] == int(mask.sum(1).max()) < 24
    with torch.no_grad():
        model.dynamic_padding = True
        dynamic = model(x)
        model.dynamic_padding = False
        fixed = model(x)
    assert torch.allclose(dynamic, fixed, atol=1e-5, rtol=0), (dynamic - fixed).abs().max()


def test_trim_padding_leaves_full_and_left_padded_batches_whole():
    x = torch.ones(2, 3, 5, dtype=torch.long)
    assert trim_padding(x) is x  # nothing to cut
    left = x.clone()
    left[0, 1, :2] = 0  # left padding: the last position is used by every row
    assert trim_padding(left) is left
    right = x.clone()
    right[:, 1, 3:] = 0
    assert trim_padding(right).shape == (2, 3, 3)


def test_bucketed_batches_cover_every_example_once_per_epoch():
    n, bs = 103, 8
    lengths = torch.randint(1, 60, (n,), generator=torch.Generator().manual_seed(3))
    for seed in range(3):
        parts = batch_order(n, bs, seed, lengths, bucket=4)
        got = torch.cat(parts)
        assert sorted(got.tolist()) == list(range(n))  # each example exactly once
        assert len(parts) == -(-n // bs) and all(len(p) <= bs for p in parts)
        assert [p.tolist() for p in batch_order(n, bs, seed, lengths, bucket=4)] == [p.tolist() for p in parts]
        # inside a chunk of 4 batches the lengths are sorted: a batch's spread is far below the chunk's
        spread = sum(int(lengths[p].max() - lengths[p].min()) for p in parts) / len(parts)
        plain = batch_order(n, bs, seed)
        plain_spread = sum(int(lengths[p].max() - lengths[p].min()) for p in plain) / len(plain)
        assert spread < plain_spread / 2
        # a chunk holds the examples the plain shuffle puts there (the data order is kept between chunks)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        for c in range(0, len(parts), 4):
            assert sorted(torch.cat(parts[c : c + 4]).tolist()) == sorted(order[c * bs : (c + 4) * bs].tolist())


def test_default_batches_are_the_seeded_shuffle():
    x, y = torch.arange(50).float().unsqueeze(1), torch.arange(50)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(7))
    want = [order[i : i + 16].tolist() for i in range(0, 50, 16)]
    assert [yb.tolist() for _, yb in batches(x, y, 16, seed=7)] == want
    lengths = torch.arange(50)
    assert [yb.tolist() for _, yb in batches(x, y, 16, 7, lengths, bucket=0)] == want  # no bucketing by default


def test_fit_with_length_buckets_trains_on_every_example():
    model = _long("bert")
    task = model.encode_task(_varied(64))
    assert token_lengths(task.x_train).tolist() == task.x_train[:, 1].sum(-1).tolist()
    seen = []
    cfg = LoopConfig(optimizer="adam", lr=1e-3, epochs=2, batch_size=8, device="cpu")

    def loss(m, xb, yb):
        seen.append(int(trim_padding(xb).shape[-1]))
        return torch.nn.functional.cross_entropy(m(xb), yb), {}

    res = fit(model, task, cfg, loss_fn=loss, progress=False, length_buckets=4)
    steps = 2 * -(-len(task.y_train) // 8)
    assert res.steps == len(seen) == steps
    assert sum(seen) < steps * int(task.x_train[:, 1].sum(-1).max())  # shorter batches than the longest row
    with pytest.raises(ValueError, match="length_buckets"):
        fit(model, task, cfg, progress=False, length_buckets=-1)


def test_the_length_buckets_flag_is_the_fit_argument_and_leaves_old_keys_alone():
    """`--length-buckets N` (LoopConfig.length_buckets) gives fit(..., length_buckets=N)'s batches; at its default
    the field is not in the config's dict, so run keys, records and bindings written before it stay the same."""
    model = _long("bert")
    task = model.encode_task(_varied(48))
    widths = {}
    for name, cfg, arg in [
        ("argument", LoopConfig(optimizer="adam", lr=1e-3, epochs=1, batch_size=8, device="cpu"), 4),
        ("field", LoopConfig(optimizer="adam", lr=1e-3, epochs=1, batch_size=8, device="cpu", length_buckets=4), 0),
        ("none", LoopConfig(optimizer="adam", lr=1e-3, epochs=1, batch_size=8, device="cpu"), 0),
    ]:
        seen = widths[name] = []

        def loss(m, xb, yb, seen=seen):
            seen.append(int(trim_padding(xb).shape[-1]))
            return torch.nn.functional.cross_entropy(m(xb), yb), {}

        fit(_long("bert"), task, cfg, loss_fn=loss, progress=False, length_buckets=arg)
    assert widths["argument"] == widths["field"] != widths["none"]
    assert "length_buckets" not in LoopConfig().to_dict()
    assert LoopConfig(length_buckets=3).to_dict()["length_buckets"] == 3
    assert from_dict(LoopConfig, LoopConfig(length_buckets=3).to_dict()).length_buckets == 3
    with pytest.raises(ValueError, match="length_buckets"):
        LoopConfig(length_buckets=-2)


def _no_dropout(model: HFClassifier) -> HFClassifier:
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


@pytest.mark.parametrize("dropout", [False, True])
def test_fine_tuning_with_dynamic_padding(dropout):
    """Without dropout, dynamic and fixed padding train to the same numbers. With dropout the masks are drawn for
    the shorter batches, so the runs differ as two dropout seeds do; each is reproducible."""
    text = _varied(64)
    cfg = FineTuneConfig(loop=LoopConfig(optimizer="adam", lr=1e-2, max_steps=12, batch_size=8, device="cpu"))
    runs = {}
    for dynamic in (True, False, True):
        model = _long("bert") if dropout else _no_dropout(_long("bert"))
        model.dynamic_padding = dynamic
        runs.setdefault(dynamic, []).append(finetune(model, cfg, text, progress=False))
    a, b, again = runs[True][0], runs[False][0], runs[True][1]
    assert again.losses == a.losses and again.accuracy == a.accuracy and again.evals == a.evals
    if not dropout:
        assert a.accuracy == b.accuracy and a.curve == b.curve and a.evals == b.evals
        assert a.losses == pytest.approx(b.losses, abs=1e-4)
    # the final accuracy is the last epoch's evaluation, reused: what evaluating the final model gives
    task = a.model.encode_task(text)
    assert a.accuracy == accuracy(a.model, task.x_test, task.y_test)


def test_a_red_team_row_scores_the_final_model():
    """The row's accuracy (the training run's final evaluation, reused) is the final model's test accuracy, and
    the authorized task's after the attack is measured on it too."""
    model = _long("bert")
    text, retain = _varied(64), toy_task(40)
    target = Target(copy.deepcopy(model), model.encode_task(text), model.encode_task(retain), text=text)
    spec = AttackSpec.of("adam", 1e-2, max_steps=6, batch_size=8)
    row = run_spec(target, spec)
    res = finetune(model, spec.finetune_config("cpu"), model.encode_task(text), progress=False)
    assert row.accuracy == res.accuracy == accuracy(res.model, *(lambda t: (t.x_test, t.y_test))(target.task))
    r = target.retain
    assert row.authorized_after_attack == accuracy(res.model, r.x_test, r.y_test)


def test_probe_features_pool_the_same_tokens_with_dynamic_padding():
    """The probe pools each block's hidden states over the attention mask: a batch the model cut to its longest
    row pools over the same tokens as the whole max_length batch."""
    from trainlock.attacks.stages.probe import probe_features

    model = _long("bert").eval()
    x = model.encode_task(_varied()).x_train[:20]
    got = {}
    for dynamic in (True, False):
        model.dynamic_padding = dynamic
        got[dynamic] = probe_features(model, x, batch_size=8)
    assert got[True].keys() == got[False].keys() and len(got[True]) > 1
    for name in got[True]:
        assert got[True][name].shape == got[False][name].shape == (20, 16), name
        assert abs(got[True][name] - got[False][name]).max() < 1e-5, name
