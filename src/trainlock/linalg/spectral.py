"""Top-k singular values by warm-started block power iteration, differentiable in the weights.

The bases are detached; the values are the Ritz values of the current basis, sigma(W V) for a right
basis V or sigma(U^T W) for a left basis U, computed with autograd through W, so d sigma_i / dW =
u_i v_i^T exactly for the Ritz pairs (for k=1 this is the familiar u v^T of spectral normalisation).
Each warm call is one half-step of the block power iteration: one product with W (W V or W^T U), whose
singular vectors are the other side's basis for the next call. So a call reads W once, not twice, and
the basis alternates sides; a cold start iterates to tolerance first.

The same routine runs on any linear operator given its forward map and adjoint (each differentiable
when grad is on): dense matrices, and convolutions as true operators through conv / conv_transpose.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

Tensor = torch.Tensor


class SpectralState(NamedTuple):
    """Warm-start state: an orthonormal basis, (n, r) on the input side or (m, r) on the output side
    (`left`), for a matrix (m, n) or an operator flattened to one (m outputs, n inputs)."""

    V: Tensor
    iters: int  # iterations run so far (cold start included; a warm call counts one)
    left: bool = False  # V spans the output (left) side: the next call multiplies by W^T


def _expected(state: SpectralState | None, m: int, n: int, r: int, device: torch.device) -> bool:
    """Whether `state` can warm-start an (m, n) operator at basis width r on `device`."""
    if state is None or state.V.device != device:
        return False
    return tuple(state.V.shape) == ((m, r) if state.left else (n, r))


def _orth(x: Tensor) -> Tensor:
    """Orthonormal basis of the columns of x (n, r), by reduced QR."""
    return torch.linalg.qr(x, mode="reduced").Q


def _ritz(Y: Tensor) -> tuple[Tensor, Tensor]:
    """Singular values of Y (p, r), differentiable, and an orthonormal basis of its columns ordered by them
    (detached): the Ritz values of a basis and the other side's basis for the next half-step."""
    if Y.shape[1] == 1:  # plain power iteration: sigma = ||W v||, u = W v / sigma
        sigma = torch.linalg.vector_norm(Y, dim=0)  # (1,)
        return sigma, Y.detach() / sigma.detach().clamp_min(1e-30)
    Q, S, _ = torch.linalg.svd(Y, full_matrices=False)  # the gradient flows through S only
    return S, Q.detach()


def _block_power(
    matvec: Callable[[Tensor], Tensor],
    rmatvec: Callable[[Tensor], Tensor],
    B: Tensor,
    k: int,
    iters: int,
    tol: float,
    left: bool = False,
) -> tuple[Tensor, Tensor, bool, int]:
    """Block power iteration on columns. B: an orthonormal basis, (n, r) of the input side or, when `left`,
    (m, r) of the output side. matvec: (n, r) -> (m, r); rmatvec: (m, r) -> (n, r); both differentiable
    through W when called with grad enabled.

    Runs up to `iters` no-grad full iterations (stopping early when the top-k Ritz values change by
    less than `tol`, relatively), then one differentiable half-step: sigma from W V (or W^T U), whose
    singular vectors are the basis for the next call, on the other side. Returns (sigma (k,), next
    basis, whether it is a left basis, iterations).
    """
    done = 0
    with torch.no_grad():
        if iters > 0 and left:  # full iterations start from the input side
            B, left = _orth(rmatvec(B)), False
        prev = None
        for _ in range(iters):
            U = _orth(matvec(B))  # (m, r)
            B, R = torch.linalg.qr(rmatvec(U), mode="reduced")  # (n, r), (r, r); U^T W V = R^T
            done += 1
            est = torch.linalg.svdvals(R)[:k]
            if prev is not None and torch.all((est - prev).abs() <= tol * est.abs().clamp_min(1e-30)):
                break
            prev = est
    sigma, B = _ritz(rmatvec(B) if left else matvec(B))  # one product with W, differentiable
    return sigma[:k], B, not left, done + 1


def _tol(tol: float | None, dtype: torch.dtype) -> float:
    """Default stopping tolerance on the relative change of the Ritz values.

    Ritz values converge as the square of the basis error, so a value tolerance of t leaves the
    singular vectors (and so the gradient u v^T) accurate to about sqrt(t).
    """
    if tol is not None:
        return tol
    return 1e-13 if dtype == torch.float64 else 1e-7


def _block_size(k: int, n: int, m: int, oversample: int | None) -> int:
    """Basis width: k plus `oversample` extra vectors (default: none for k=1, the cheap classic
    power iteration of spectral normalisation; min(k, 4) otherwise, for faster convergence)."""
    p = (0 if k == 1 else min(k, 4)) if oversample is None else oversample
    return max(k, min(k + p, n, m))


def _no_autocast(t: Tensor):
    """Autocast off on `t`'s device: singular values are computed in fp32 (or W's own wider dtype) even
    when the caller's forward pass runs under bf16 autocast (`--precision bf16`)."""
    return torch.autocast(device_type=t.device.type, enabled=False)


def top_singular_values(
    W: Tensor,
    k: int = 1,
    state: SpectralState | None = None,
    *,
    iters: int | None = None,
    tol: float | None = None,
    oversample: int | None = None,
) -> tuple[Tensor, SpectralState]:
    """Top-k singular values of W (m, n) (or any (out, ...) tensor, read as (out, prod(...))).

    Returns `(sigma, state)`: sigma (k,) in descending order, differentiable w.r.t. W; pass
    `state` back to warm-start. With no state the basis is iterated until the values change by
    less than `tol` (relative; default 1e-13 in float64, 1e-7 otherwise), at most 300 iterations
    or `iters`; with a state, one iteration per call unless `iters` says more.
    """
    if not isinstance(W, Tensor) or W.dim() < 2:
        raise ValueError(
            f"top_singular_values needs a matrix (a tensor of 2 or more dimensions), got "
            f"{tuple(W.shape) if isinstance(W, Tensor) else type(W).__name__}"
        )
    if not W.is_floating_point():
        raise ValueError(f"top_singular_values needs a floating-point tensor, got {W.dtype}; convert it with .float()")
    W2 = W.reshape(W.shape[0], -1)  # (m, n)
    m, n = W2.shape
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(m, n):
        raise ValueError(f"k must be an integer between 1 and min(m, n)={min(m, n)} for shape {(m, n)}, got {k!r}")
    if state is None and not bool(torch.isfinite(W2).all()):  # checked on a cold start, not every warm step
        raise ValueError("top_singular_values: the matrix has NaN or infinite entries")
    work = W2.float() if W2.dtype in (torch.float16, torch.bfloat16) else W2
    r = _block_size(k, n, m, oversample)
    if not _expected(state, m, n, r, W.device):
        g = torch.Generator().manual_seed(0)
        B0 = _orth(torch.randn(n, r, generator=g, dtype=work.dtype).to(W.device))
        steps, prior, left = (300 if iters is None else iters), 0, False
    else:
        B0, steps, prior, left = state.V.to(work.dtype), (0 if iters is None else iters), state.iters, state.left
    Wd = work.detach()

    def rmatvec(U: Tensor) -> Tensor:  # W^T U as (U^T W)^T: the thin W.T @ U is a slow path on CPU
        return (U.T @ (work if torch.is_grad_enabled() else Wd)).T

    with _no_autocast(W):
        sigma, B, left, done = _block_power(lambda V: work @ V, rmatvec, B0, k, steps, _tol(tol, work.dtype), left)
    return sigma.to(W.dtype), SpectralState(B, prior + done, left)


def conv_singular_values(
    conv: nn.Conv2d,
    input_hw: tuple[int, int],
    k: int = 1,
    state: SpectralState | None = None,
    *,
    iters: int | None = None,
    tol: float | None = None,
    oversample: int | None = None,
) -> tuple[Tensor, SpectralState]:
    """Top-k singular values of a Conv2d as the linear operator on (C_in, H, W) inputs.

    This is the true operator norm (zero padding, stride and dilation included), not the norm of
    the reshaped (out, in*kh*kw) kernel. Differentiable w.r.t. conv.weight; bias is ignored.
    """
    c_in, (h, w) = conv.in_channels, input_hw
    weight = conv.weight
    kw = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation, "groups": conv.groups}
    if not isinstance(conv.padding, tuple) or conv.padding_mode != "zeros":
        raise ValueError("conv_singular_values supports numeric zero padding only")
    in_shape = (c_in, h, w)
    n = c_in * h * w
    with _no_autocast(weight):
        out_shape = F.conv2d(torch.zeros(1, *in_shape).to(weight), weight.detach(), **kw).shape[1:]
    m = int(torch.tensor(out_shape).prod())
    r = _block_size(k, n, m, oversample)
    # output_padding so conv_transpose maps back exactly onto in_shape
    with _no_autocast(weight):
        probe = F.conv_transpose2d(torch.zeros(1, *out_shape).to(weight), weight.detach(), **kw)
    out_pad = (h - probe.shape[2], w - probe.shape[3])

    def matvec(V: Tensor) -> Tensor:  # (n, r) -> (m, r)
        x = V.T.reshape(r, *in_shape)  # (r, C, H, W)
        return F.conv2d(x, weight, **kw).reshape(r, m).T

    def rmatvec(U: Tensor) -> Tensor:  # (m, r) -> (n, r), the adjoint (differentiable when grad is on)
        y = U.T.reshape(r, *out_shape)
        w = weight if torch.is_grad_enabled() else weight.detach()
        return F.conv_transpose2d(y, w, output_padding=out_pad, **kw).reshape(r, n).T

    if not _expected(state, m, n, r, weight.device):
        g = torch.Generator().manual_seed(0)
        B0 = _orth(torch.randn(n, r, generator=g).to(weight))
        steps, prior, left = (300 if iters is None else iters), 0, False
    else:
        B0, steps, prior, left = state.V, (0 if iters is None else iters), state.iters, state.left
    with _no_autocast(weight):
        sigma, B, left, done = _block_power(matvec, rmatvec, B0, k, steps, _tol(tol, weight.dtype), left)
    return sigma, SpectralState(B, prior + done, left)
