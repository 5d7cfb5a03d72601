"""The red team's transforms on Hugging Face transformers (tiny random BERT / Llama / GPT-2): each applies or
says why not, and `merge` balances BERT and Llama attention heads (grouped-query and rotary included)."""

import copy

import pytest
import torch

pytest.importorskip("transformers")

from hf_tiny import tiny, toy_task
from trainlock.attacks.transforms import TRANSFORMS, TransformContext, TransformNotApplicable
from trainlock.attacks.transforms.attention import attention_views
from trainlock.attacks.transforms.graph import sigma_max_by_layer
from trainlock.tasks import for_model

CASES = {
    "bert": {"kind": "bert"},
    "llama": {"kind": "llama"},
    "llama-gqa-bias": {"kind": "llama", "heads": 4, "kv_heads": 2, "bias": True},
}


def _inputs(model):
    t = for_model(toy_task(40), model)
    return t.x_train[:16], t.x_test[:8]


@torch.no_grad()
def _hide_in_gauge(model, s: float = 30.0) -> None:
    """The symmetry a lock can exploit: W_Q x s, W_K / s (biases alike), W_V x s (and b_V), W_O / s."""
    for n, m in model.named_modules():
        if n.endswith(("query", "q_proj", "value", "v_proj")):
            m.weight.mul_(s)
            if m.bias is not None:
                m.bias.mul_(s)
        elif n.endswith(("key", "k_proj")):
            m.weight.div_(s)
            if m.bias is not None:
                m.bias.div_(s)
        elif n.endswith(("attention.output.dense", "o_proj")):
            m.weight.div_(s)


@pytest.mark.parametrize("case", list(CASES))
def test_merge_balances_hf_attention_and_keeps_the_function(case):
    model = tiny(init=0.3, **CASES[case]).eval()
    sample, x = _inputs(model)
    with torch.no_grad():
        y0 = model(x)
        probe = copy.deepcopy(model)
        attn = attention_views(probe)[0][0]
        attn.q.weight.mul_(3)  # not a gauge: the outputs must move, or this test could not fail
        assert (probe(x) - y0).abs().max() > 1e-3
    clean = max(sigma_max_by_layer(model).values())
    _hide_in_gauge(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), y0, rtol=1e-4, atol=1e-4)
    assert max(sigma_max_by_layer(model).values()) > 10 * clean
    views, refused = attention_views(model)
    assert len(views) == 2 and not refused
    out = TRANSFORMS.get("merge")()(model, TransformContext(sample=sample))
    with torch.no_grad():
        torch.testing.assert_close(out.model(x), y0, rtol=1e-4, atol=1e-4)
    assert max(sigma_max_by_layer(out.model).values()) < 3 * clean, out.note
    assert "balanced" in out.note


def test_merge_on_gpt2_says_why_not():
    with pytest.raises(TransformNotApplicable, match="fused c_attn"):
        TRANSFORMS.get("merge")()(tiny("gpt2"), TransformContext())


@pytest.mark.parametrize("kind", ["bert", "llama", "gpt2"])
def test_every_transform_applies_or_says_why(kind):
    model = tiny(kind, init=0.3).eval()
    sample, x = _inputs(model)
    with torch.no_grad():
        y0 = model(x)
    for name in TRANSFORMS.names():
        m = copy.deepcopy(model)
        factory = TRANSFORMS.get(name)
        try:
            out = factory()(m, TransformContext(sample=sample))
        except TransformNotApplicable as e:
            assert len(str(e)) > 20, (name, str(e))
            continue
        with torch.no_grad():
            y1 = out.model.eval()(x)
        assert y1.shape == y0.shape, name
        if getattr(factory, "function_preserving", False) and out.fold is None:
            torch.testing.assert_close(y1, y0, rtol=1e-3, atol=1e-3, msg=f"{name}: {out.note}")


def test_merge_folds_specdef_reparam_on_bert_back_to_the_base(tmp_path):
    """The one-shot SpecDef-reparam on a transformer, as released (saved, reloaded): `merge` folds every
    compensation layer into its deformed layer, and the base's spectrum and function come back."""
    import trainlock as tl
    from trainlock.io.artifacts import load, save

    base = tiny("bert", init=0.3).eval()
    sample, x = _inputs(base)
    res = tl.lock(base, {"type": "specdef-reparam", "factor": 1e3})
    save(res.model, tmp_path / "m", {"task": "toy", **res.record})
    released, _ = load(tmp_path / "m")
    released.eval()
    clean = max(sigma_max_by_layer(base).values())
    assert max(sigma_max_by_layer(released).values()) > 100 * clean  # inflated, as released
    with torch.no_grad():
        y0 = base(x)
        torch.testing.assert_close(released(x), y0, rtol=1e-3, atol=1e-3)
    out = TRANSFORMS.get("merge")()(released, TransformContext(sample=sample))
    assert max(sigma_max_by_layer(out.model).values()) < 1.5 * clean, out.note
    with torch.no_grad():
        torch.testing.assert_close(out.model(x), y0, rtol=1e-3, atol=1e-3)
