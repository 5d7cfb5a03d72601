"""`transformer`: a tiny pre-LayerNorm Transformer encoder classifier with explicit, named Linear layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .base import MODELS
from .mlp import check_common


class Attention(nn.Module):
    """Multi-head self-attention with separate Linear projections `q`, `k`, `v` and output `o`."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape  # (B, T, D)

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # (B, heads, T, D/heads)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))  # (B, heads, T, D/h)
        # explicit attention: the same as F.scaled_dot_product_attention, and vmap has batching
        # rules for every op here (the fused kernel has none on CPU and falls back to a loop)
        att = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # (B, heads, T, T)
        y = att.softmax(dim=-1) @ v  # (B, heads, T, D/h)
        return self.o(y.transpose(1, 2).reshape(b, t, d))  # (B, T, D)


class EncoderLayer(nn.Module):
    """x + Attention(LN(x)), then x + MLP(LN(x)) with Linear `fc1` -> GELU -> Linear `fc2`."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mlp_ratio)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim * mlp_ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (B, T, D)
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))  # (B, T, D)


class Transformer(nn.Module):
    """Patch/chunk tokens -> Linear `embed` + learned `pos` -> `depth` EncoderLayers -> mean pool -> LN -> `head`.

    Images (C, H, W) become (H/patch)*(W/patch) tokens of size C*patch*patch;
    vectors (D,) become D/token_dim tokens of size token_dim.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: int = 2,
        patch: int = 7,
        token_dim: int = 4,
    ):
        super().__init__()
        shape = check_common("transformer", input_shape, num_classes)
        dim, depth, heads, mlp_ratio, patch, token_dim = map(int, (dim, depth, heads, mlp_ratio, patch, token_dim))
        if min(dim, depth, heads, mlp_ratio, patch, token_dim) < 1:
            raise ValueError("model 'transformer': dim, depth, heads, mlp_ratio, patch and token_dim must be >= 1")
        if dim % heads:
            raise ValueError(f"model 'transformer': dim ({dim}) must be divisible by heads ({heads})")
        if len(shape) == 3:
            c, h, w = shape
            if h % patch or w % patch:
                raise ValueError(
                    f"model 'transformer': image H and W must be divisible by patch={patch}, got {shape!r}"
                )
            tokens, token_size = (h // patch) * (w // patch), c * patch * patch
        elif len(shape) == 1:
            if shape[0] % token_dim:
                raise ValueError(
                    f"model 'transformer': vector length must be divisible by token_dim={token_dim}, got {shape!r}"
                )
            tokens, token_size = shape[0] // token_dim, token_dim
        else:
            raise ValueError(f"model 'transformer' needs input_shape (C, H, W) or (D,), got {tuple(input_shape)!r}")
        self.input_shape = shape
        self.num_classes = int(num_classes)
        self.patch, self.token_dim = patch, token_dim
        self.config = {
            "input_shape": list(shape),
            "num_classes": self.num_classes,
            "dim": dim,
            "depth": depth,
            "heads": heads,
            "mlp_ratio": mlp_ratio,
            "patch": patch,
            "token_dim": token_dim,
        }

        self.embed = nn.Linear(token_size, dim)
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.layers = nn.Sequential(*(EncoderLayer(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, self.num_classes)

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *input_shape) -> (B, T, token_size)."""
        b = x.shape[0]
        if x.dim() == 4:
            _, c, h, w = x.shape
            p = self.patch
            x = x.reshape(b, c, h // p, p, w // p, p)  # (B, C, H/p, p, W/p, p)
            return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)  # (B, T, C*p*p)
        return x.reshape(b, -1, self.token_dim)  # (B, D/token_dim, token_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(self.tokenize(x)) + self.pos  # (B, T, dim)
        x = self.layers(x)  # (B, T, dim)
        x = self.norm(x.mean(dim=1))  # (B, dim)
        return self.head(x)  # (B, num_classes)


MODELS.add("transformer", Transformer)
