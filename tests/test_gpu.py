"""GPU path: run with `pytest -m gpu` on a machine with CUDA (skipped elsewhere)."""

import pytest
import torch

import trainlock as tl
from trainlock.linalg.spectral import top_singular_values
from trainlock.locks import specdef_loop
from trainlock.train import LoopConfig

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_spectral_op_on_cuda_matches_svdvals():
    torch.manual_seed(0)
    W = torch.randn(512, 256, device="cuda", dtype=torch.float64, requires_grad=True)
    sigma, state = top_singular_values(W, 4)
    assert state.V.device.type == "cuda"
    ref = torch.linalg.svdvals(W.detach())[:4]
    torch.testing.assert_close(sigma.detach(), ref, rtol=1e-8, atol=1e-8)
    sigma.sum().backward()
    assert W.grad.device.type == "cuda" and torch.isfinite(W.grad).all()


def test_bf16_weights_are_measured_in_float32():
    W = torch.randn(256, 128, device="cuda").bfloat16()
    sigma, _ = top_singular_values(W, 2)
    ref = torch.linalg.svdvals(W.float())[:2]
    assert sigma.dtype == torch.bfloat16
    torch.testing.assert_close(sigma.float(), ref, rtol=1e-2, atol=0)


def test_lock_and_attack_on_cuda(digits, digits_permuted):
    torch.manual_seed(0)
    model = tl.models.build("cnn", input_shape=[1, 8, 8], num_classes=10, channels=[8], hidden=32)
    rep = tl.lock(
        model, tl.SpecDefConfig(loop=specdef_loop(lr=5.0, epochs=2, batch_size=32, device="cuda")), digits
    ).report
    assert next(rep.model.parameters()).device.type == "cuda"
    assert rep.sigma_after["mean_topk"] > 5 * rep.sigma_before["mean_topk"]
    res = tl.attack(rep.model, tl.FineTuneConfig(loop=LoopConfig(max_steps=20, device="cuda")), digits_permuted)
    assert res.steps == 20 and 0 <= res.accuracy <= 1
    path = tl.save(rep.model, "/tmp/trainlock-gpu-test", {"task": "digits"})
    loaded, _ = tl.load(path)
    assert next(loaded.parameters()).device.type == "cpu"
