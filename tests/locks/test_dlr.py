"""`dlr`: MLP blocks replaced by distilled deep low-rank residual nets; saved and loaded; costs measured."""

import pytest
import torch

import trainlock as tl
from trainlock.config import to_dict
from trainlock.io.artifacts import load, save
from trainlock.locks import LOCKS, lock_from_meta
from trainlock.locks.dlr import DLRConfig, cost_profile, distill_block, find_blocks
from trainlock.models.dlr_net import DLRNet
from trainlock.train import LoopConfig, fit


@pytest.fixture(scope="module")
def tiny_transformer(digits):
    torch.manual_seed(0)
    m = tl.models.build("transformer", input_shape=digits.input_shape, num_classes=10, patch=4, dim=32)
    fit(m, digits, LoopConfig(optimizer="adam", lr=3e-3, epochs=3, batch_size=32, device="cpu"), progress=False)
    return m


def test_dlr_net_starts_at_zero_and_distills_a_block():
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
    x = torch.randn(512, 8)
    y = block(x).detach()
    net = DLRNet(8, depth=4, rank=4)
    assert torch.equal(net(x), torch.zeros_like(x))
    err = distill_block(net, x, y, steps=400, lr=3e-3)
    assert err < 0.3  # from 1.0 (the zero start) to a fit


def test_lock_replaces_blocks_keeps_accuracy_and_reloads(tiny_transformer, digits, tmp_path):
    blocks = find_blocks(tiny_transformer)
    assert [b["first"] for b in blocks] == ["layers.0.fc1", "layers.1.fc1"]
    res = tl.lock(tiny_transformer, LOCKS.get("dlr").from_config({"depth": 4, "distill_steps": 400}), retain=digits)
    locked = res.model
    assert all(isinstance(locked.get_submodule(b["first"]), DLRNet) for b in blocks)
    assert res.report.accuracy_after >= res.report.accuracy_before - 0.05
    (cert,) = res.record["certificates"]
    assert cert["holds"] and cert["measured"] == 2
    costs = cert["details"]["costs"]
    # backprop through depth-4 chains saves more activations than through the two dense layers
    assert costs["locked"]["saved_activation_bytes"] > costs["original"]["saved_activation_bytes"]
    save(locked, tmp_path / "m", {"task": "digits", **res.record})
    again, meta = load(tmp_path / "m")
    x = digits.x_test[:16]
    assert torch.allclose(again.eval()(x), locked.eval()(x), atol=1e-6)
    (entry,) = meta["locks"]
    assert entry["config"] == to_dict(DLRConfig(depth=4, distill_steps=400))  # settings only
    assert entry["record"]["retain_task"] == "digits" and len(entry["record"]["blocks"]) == 2
    assert entry["record"]["costs"] == costs
    (recert,) = lock_from_meta(meta).certify(again)
    assert recert.holds and recert.measured == 2
    again.layers[0].fc1 = torch.nn.Linear(32, 32)  # a block distilled back into a dense layer: the certificate sees it
    assert not lock_from_meta(meta).certify(again)[0].holds


def test_cost_profile_counts_saved_activations_exactly():
    lin = torch.nn.Linear(10, 3, bias=False)
    x = torch.randn(4, 10)
    prof = cost_profile(lin, x, repeats=1)
    assert prof["saved_activation_bytes"] == x.numel() * 4  # the input, saved for the weight's gradient
    assert prof["params"] == 30


def test_bert_blocks_round_trip(tmp_path):
    pytest.importorskip("transformers")
    from hf_tiny import tiny, toy_task

    model = tiny("bert")
    blocks = find_blocks(model)
    assert len(blocks) == 2 and blocks[0]["last"].endswith("output.dense")
    res = tl.lock(
        model, LOCKS.get("dlr").from_config({"depth": 2, "distill_steps": 20, "samples": 64}), retain=toy_task()
    )
    save(res.model, tmp_path / "b", {"task": "toy"})
    again, _ = load(tmp_path / "b")
    x = tl.tasks.for_model(toy_task(), again).x_test[:8]
    assert torch.allclose(again.eval()(x), res.model.eval()(x), atol=1e-5)
