import pytest
import torch
import torch.nn.functional as F

from trainlock.models.depthwise import SMALL_MAP, depthwise_conv2d


def _inputs(n, c, h, k, dtype=torch.float32, bias=True):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, h, generator=g, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, 1, k, k, generator=g, dtype=dtype).contiguous(memory_format=torch.channels_last)
    b = torch.randn(c, generator=g, dtype=dtype) if bias else None
    return [t.requires_grad_() if t is not None else None for t in (x, w, b)]


@pytest.mark.parametrize(
    "h,k,stride,padding,dilation,bias",
    [
        (2, 5, 1, 2, 1, True),
        (4, 3, 1, 1, 1, False),
        (7, 5, 2, 1, 1, True),
        (3, 3, 1, 2, 2, True),
        (3, 3, 2, 0, 1, True),
    ],
)
def test_small_maps_take_the_taps_and_match_torch(h, k, stride, padding, dilation, bias):
    x, w, b = _inputs(3, 6, h, k, bias=bias)
    y = depthwise_conv2d(x, w, b, stride, padding, dilation)
    assert "SmallMapDepthwise" in type(y.grad_fn).__name__  # the taps path, not torch's
    ref = F.conv2d(x, w, b, stride, padding, dilation, groups=6)
    assert torch.equal(y, ref)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [t for t in (x, w, b) if t is not None], g)
    want = torch.autograd.grad(ref, [t for t in (x, w, b) if t is not None], g)
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


def test_large_maps_and_channels_first_stay_on_torch():
    x, w, _ = _inputs(2, 4, 8, 3)  # 8 x 8 = 64 outputs > SMALL_MAP
    assert SMALL_MAP < 64
    assert "SmallMapDepthwise" not in type(depthwise_conv2d(x, w, None, 1, 1).grad_fn).__name__
    x2 = x.detach().contiguous().requires_grad_()[:, :, :3, :3]  # a small map, but not channels-last
    assert "SmallMapDepthwise" not in type(depthwise_conv2d(x2.contiguous(), w, None, 1, 1).grad_fn).__name__
    with torch.no_grad():
        assert depthwise_conv2d(x, w, None, 1, 1).grad_fn is None


def test_second_derivatives_match_torch():
    """A Hessian-vector product through the taps' backward (gradgradcheck, float64)."""
    x, w, b = _inputs(2, 3, 3, 3, dtype=torch.float64)
    fn = lambda x, w, b: depthwise_conv2d(x, w, b, 1, 1)
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))
