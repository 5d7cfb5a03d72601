"""`reinit`: re-initialize the head, the last blocks, or the most inflated layers, and nothing else."""

import pytest
import torch

import trainlock as tl
from trainlock.attacks.transforms import TRANSFORMS, TransformContext


def _changed(before: dict, model) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def _mlp():
    torch.manual_seed(0)
    return tl.models.build("mlp", input_shape=[1, 8, 8], num_classes=10, hidden=[32, 32])


def test_reinit_head_and_last_layers_of_an_mlp():
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head_name = tl.models.find_head(model)[0]
    out = TRANSFORMS.get("reinit")(what="head")(model, TransformContext(seed=1))
    assert _changed(before, out.model) == {f"{head_name}.weight", f"{head_name}.bias"}
    model = _mlp()
    out = TRANSFORMS.get("reinit")(what="last", n=1)(model, TransformContext(seed=1))
    changed = _changed(before, out.model)
    assert len(changed) == 2 and head_name not in " ".join(changed)  # one Linear before the head


def test_reinit_inflated_finds_the_inflated_layer():
    model = _mlp()
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():  # a spectral lock's signature on the second layer: one huge singular value
        w = dict(model.named_modules())[names[1]].weight
        u, v = torch.linalg.svd(w)[0][:, :1], torch.linalg.svd(w)[2][:1]
        w.add_(50.0 * u @ v)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = TRANSFORMS.get("reinit")(what="inflated", n=1)(model, TransformContext())
    assert _changed(before, out.model) == {f"{names[1]}.weight", f"{names[1]}.bias"}
    assert out.stats["reinitialized"] == [names[1]]


def test_reinit_last_block_of_a_transformer():
    pytest.importorskip("transformers")
    from hf_tiny import tiny

    model = tiny("bert")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = TRANSFORMS.get("reinit")(what="last", n=1)(model, TransformContext())
    changed = _changed(before, out.model)
    assert changed and all(".layer.1." in k for k in changed), changed
    with pytest.raises(ValueError, match="what must be one of"):
        TRANSFORMS.get("reinit")(what="middle")
