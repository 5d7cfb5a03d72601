import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from trainlock.linalg.spectral import conv_singular_values, top_singular_values


def _ref_grad(W, k):
    W = W.detach().clone().requires_grad_(True)
    torch.linalg.svdvals(W.reshape(W.shape[0], -1))[:k].sum().backward()
    return W.grad


@pytest.mark.parametrize("shape,k", [((50, 30), 1), ((30, 80), 1), ((64, 48), 3), ((16, 3, 3, 3), 2), ((7, 7), 7)])
def test_values_and_gradients_match_svdvals(shape, k):
    torch.manual_seed(1)
    W = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    sigma, _state = top_singular_values(W, k)
    ref = torch.linalg.svdvals(W.detach().reshape(shape[0], -1))[:k]
    assert sigma.shape == (k,)
    torch.testing.assert_close(sigma.detach(), ref, rtol=1e-9, atol=1e-9)
    sigma.sum().backward()
    torch.testing.assert_close(W.grad, _ref_grad(W, k), rtol=1e-5, atol=1e-5)


def test_k1_gradient_is_u_vT():
    torch.manual_seed(2)
    W = torch.randn(20, 12, dtype=torch.float64, requires_grad=True)
    sigma, _ = top_singular_values(W, 1)
    sigma.sum().backward()
    U, _S, Vh = torch.linalg.svd(W.detach())
    uvT = torch.outer(U[:, 0], Vh[0])
    sign = torch.sign((W.grad * uvT).sum())  # singular vectors are defined up to a joint sign
    torch.testing.assert_close(W.grad, sign * uvT, atol=1e-6, rtol=0)


def test_float32_accuracy():
    torch.manual_seed(3)
    W = torch.randn(256, 128)
    sigma, _ = top_singular_values(W, 4)
    ref = torch.linalg.svdvals(W)[:4]
    assert torch.allclose(sigma, ref, rtol=1e-4)


def test_warm_start_tracks_a_changing_matrix():
    torch.manual_seed(4)
    W = torch.randn(40, 30, dtype=torch.float64)
    _, state = top_singular_values(W, 2)
    cold_iters = state.iters
    for _ in range(5):  # small updates, as in training: one iteration per call keeps up
        W = W + 1e-3 * torch.randn_like(W)
        sigma, state = top_singular_values(W, 2, state)
        torch.testing.assert_close(sigma, torch.linalg.svdvals(W)[:2], rtol=1e-6, atol=0)
    assert state.iters == cold_iters + 5


def test_state_of_another_shape_is_ignored():
    W = torch.randn(10, 8)
    _, state = top_singular_values(W, 1)
    sigma, _ = top_singular_values(torch.randn(12, 9), 1, state)
    assert sigma.shape == (1,)


@pytest.mark.parametrize("bad,k", [(torch.randn(5), 1), (torch.randn(4, 3), 0), (torch.randn(4, 3), 4)])
def test_bad_input(bad, k):
    with pytest.raises(ValueError):
        top_singular_values(bad, k)


def _dense_conv_matrix(conv, hw):
    c, (h, w) = conv.in_channels, hw
    eye = torch.eye(c * h * w, dtype=conv.weight.dtype).reshape(-1, c, h, w)
    out = F.conv2d(eye, conv.weight, stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
    return out.reshape(c * h * w, -1).T  # (m, n)


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, 0)])
def test_conv_operator_norm_matches_dense_operator(stride, padding):
    torch.manual_seed(5)
    conv = nn.Conv2d(3, 4, 3, stride=stride, padding=padding, bias=False).double()
    sigma, _ = conv_singular_values(conv, (8, 8), k=2)
    W = conv.weight
    ref = torch.linalg.svdvals(_dense_conv_matrix(conv, (8, 8)))[:2]
    torch.testing.assert_close(sigma.detach(), ref.detach(), rtol=1e-8, atol=1e-8)
    sigma.sum().backward()
    g = W.grad.clone()
    W.grad = None
    torch.linalg.svdvals(_dense_conv_matrix(conv, (8, 8)))[:2].sum().backward()
    torch.testing.assert_close(g, W.grad, rtol=1e-5, atol=1e-5)


def test_conv_operator_norm_differs_from_reshaped_kernel():
    torch.manual_seed(6)
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False).double()
    op, _ = conv_singular_values(conv, (6, 6))
    reshaped, _ = top_singular_values(conv.weight, 1)
    assert not torch.isclose(op, reshaped.detach(), rtol=1e-3).item()


def test_a_warm_call_reads_the_matrix_once_and_alternates_sides():
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(7)
    m, n, k = 96, 160, 3
    W = torch.randn(m, n, dtype=torch.float64)
    _, state = top_singular_values(W, k)
    r = state.V.shape[1]
    sides = []
    for _ in range(4):
        W = W + 1e-4 * torch.randn_like(W)
        with FlopCounterMode(display=False) as fc:
            sigma, state = top_singular_values(W, k, state)
        sides.append(state.left)
        products = fc.get_total_flops() / (2 * m * n * r)  # multiplications by W (the small SVDs are not counted)
        assert products == pytest.approx(1.0, abs=0.05), products
        torch.testing.assert_close(sigma, torch.linalg.svdvals(W)[:k], rtol=1e-6, atol=0)
    assert sides == [False, True, False, True]  # the cold start ends on the left side
    assert state.V.shape == ((m, r) if state.left else (n, r))


@pytest.mark.parametrize("shape", [(24, 24), (30, 18)])
def test_gradient_of_a_left_half_step_matches_svdvals(shape):
    torch.manual_seed(8)
    W = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    _, state = top_singular_values(W.detach(), 2)
    assert state.left  # so the next call multiplies by W^T
    sigma, nxt = top_singular_values(W, 2, state)
    assert not nxt.left and nxt.V.shape[0] == shape[1]
    torch.testing.assert_close(sigma.detach(), torch.linalg.svdvals(W.detach())[:2], rtol=1e-9, atol=0)
    sigma.sum().backward()
    torch.testing.assert_close(W.grad, _ref_grad(W, 2), rtol=1e-5, atol=1e-5)


def test_conv_warm_calls_alternate_and_keep_the_gradient():
    torch.manual_seed(9)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False).double()
    _, state = conv_singular_values(conv, (6, 6), k=2)
    sigma, state2 = conv_singular_values(conv, (6, 6), k=2, state=state)  # the left half-step: conv_transpose
    assert state.left and not state2.left
    ref = torch.linalg.svdvals(_dense_conv_matrix(conv, (6, 6)))[:2]
    torch.testing.assert_close(sigma.detach(), ref.detach(), rtol=1e-8, atol=1e-8)
    sigma.sum().backward()
    g = conv.weight.grad.clone()
    conv.weight.grad = None
    torch.linalg.svdvals(_dense_conv_matrix(conv, (6, 6)))[:2].sum().backward()
    torch.testing.assert_close(g, conv.weight.grad, rtol=1e-5, atol=1e-5)
