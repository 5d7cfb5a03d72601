"""Depthwise convolution with a faster weight gradient on small CPU feature maps.

oneDNN's depthwise-convolution weight gradient is pathologically slow on small channels-last maps with padding
(torch 2.13, CPU): for EfficientNet-Lite's last blocks (1,152 channels, 2x2 output, 5x5 kernel, batch 32) it took
41 ms where the forward took 0.3 ms. The same gradient as a sum over the kernel's taps (one multiply and one
reduction of the output's size per tap) took 2.8 ms; on maps of 6x6 and up oneDNN's is as fast or faster
(notes/speed.md, session 17). `depthwise_conv2d` uses the taps only where that was measured to win: on CPU, for a
channels-last input, an output of at most `SMALL_MAP` positions, and when the weight needs a gradient, outside
autocast; everywhere else it is `F.conv2d`. The input and bias gradients are torch's own. The backward is built from differentiable ops,
so a second derivative (a Hessian-vector product) still works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SMALL_MAP = 16  # output positions (H x W) at or under which the taps compute the weight gradient


class _SmallMapDepthwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, dilation)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation, weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, stride, padding, dilation, False, [0, 0], weight.shape[0], [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            grad_w = _taps_weight_grad(x, grad, weight.shape, stride, padding, dilation)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None


def _taps_weight_grad(x, grad, shape, stride, padding, dilation) -> torch.Tensor:
    """d loss / d weight of a depthwise convolution: for each kernel tap (a, b), the sum over the batch and the
    output positions of grad times the input window that tap saw."""
    channels, _, kh, kw = shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    padded = F.pad(x, (pw, pw, ph, ph))
    ho, wo = grad.shape[2:]
    taps = []
    for a in range(kh):
        for b in range(kw):
            window = padded[:, :, a * dh : a * dh + sh * (ho - 1) + 1 : sh, b * dw : b * dw + sw * (wo - 1) + 1 : sw]
            taps.append((window * grad).sum((0, 2, 3)))
    return torch.stack(taps, 1).view(channels, 1, kh, kw)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def depthwise_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """F.conv2d(x, weight, bias, stride, padding, dilation, groups=channels) with the same values and gradients;
    on CPU, for channels-last inputs and outputs of at most SMALL_MAP positions, its weight gradient is computed
    by kernel taps (the module doc)."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    fp32 = not torch.is_autocast_enabled("cpu")  # (under autocast the saved inputs and the gradient differ in dtype)
    if x.device.type == "cpu" and fp32 and torch.is_grad_enabled() and weight.requires_grad and x.dim() == 4:
        ho = (x.shape[2] + 2 * padding[0] - dilation[0] * (weight.shape[2] - 1) - 1) // stride[0] + 1
        wo = (x.shape[3] + 2 * padding[1] - dilation[1] * (weight.shape[3] - 1) - 1) // stride[1] + 1
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        if channels_last and ho * wo <= SMALL_MAP:
            return _SmallMapDepthwise.apply(x, weight, bias, stride, padding, dilation)
    return F.conv2d(x, weight, bias, stride, padding, dilation, weight.shape[0])
