"""Attention blocks seen as four projections, for the `merge` transform's head balancing.

An attention block computes, per query head h, scores from (W_Q[h] x)^T (W_K[g] x') and a value path
W_O[:, h] W_V[g], where g is the key/value head that h reads (g = h without grouped-query attention).
Any invertible R per key/value head leaves both unchanged when W_Q[h] -> R W_Q[h] for every h of the
group, W_K[g] -> R^-T W_K[g] (biases alike), and, with its own R, W_V[g] -> R W_V[g],
W_O[:, h] -> W_O[:, h] R^-1. A lock can hide inflated singular values in that gauge; the balancing
transform takes it back.

Found here:
- trainlock's own `models.transformer.Attention` (q, k, v, o);
- BERT-family blocks of transformers (`.self.query/key/value`, `.output.dense`), with absolute
  position embeddings only: relative position scores read the query alone;
- Llama-family blocks (`q_proj`, `k_proj`, `v_proj`, `o_proj`: Llama, Mistral, Qwen2, SmolLM2), with
  grouped-query heads. Rotary embeddings rotate each pair of query / key rows (i, i + d/2) by a
  position-dependent angle, and only R that commute with every such rotation keep the scores: here a
  positive scale per row pair, so the q/k balancing there is per rotary frequency, not a full R.
Blocks that cannot be balanced are listed with the reason (fused GPT-2 `c_attn`, q/k norms, relative
positions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn


@dataclass
class HeadView:
    name: str
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    heads: int
    kv_heads: int
    head_dim: int
    rotary: bool = False  # q/k rows are rotated in pairs (i, i + head_dim / 2)

    def group(self, g: int) -> list[int]:
        """The query heads that read key/value head g."""
        per = self.heads // self.kv_heads
        return list(range(g * per, (g + 1) * per))


def _linears(*ms) -> bool:
    return all(isinstance(m, nn.Linear) for m in ms)


def _view(name: str, m: nn.Module) -> HeadView | str | None:
    """A HeadView, a reason the block cannot be balanced, or None when `m` is not an attention block."""
    from ...models.transformer import Attention

    if isinstance(m, Attention):
        d = m.q.out_features
        return HeadView(name, m.q, m.k, m.v, m.o, m.heads, m.heads, d // m.heads)
    sa, out = getattr(m, "self", None), getattr(m, "output", None)
    if sa is not None and hasattr(sa, "query") and hasattr(sa, "key") and out is not None and hasattr(out, "dense"):
        if not _linears(sa.query, sa.key, sa.value, out.dense):
            return "its projections are not nn.Linear"
        pos = getattr(sa, "position_embedding_type", None) or getattr(
            getattr(sa, "config", None), "position_embedding_type", "absolute"
        )
        if pos != "absolute":
            return f"position_embedding_type {pos!r}: relative-position scores read the query alone"
        heads = sa.num_attention_heads
        return HeadView(name, sa.query, sa.key, sa.value, out.dense, heads, heads, sa.attention_head_size)
    if all(hasattr(m, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj")):
        if not _linears(m.q_proj, m.k_proj, m.v_proj, m.o_proj):
            return "its projections are not nn.Linear"
        if getattr(m, "q_norm", None) is not None or getattr(m, "k_norm", None) is not None:
            return "q/k normalization after the projections: their scale is not a gauge"
        cfg = getattr(m, "config", None)
        head_dim = getattr(m, "head_dim", None) or m.q_proj.out_features // cfg.num_attention_heads
        heads = m.q_proj.out_features // head_dim
        kv = m.k_proj.out_features // head_dim
        if heads % kv or head_dim % 2:
            return f"{heads} query heads over {kv} key/value heads of size {head_dim}: not a grouping handled here"
        return HeadView(name, m.q_proj, m.k_proj, m.v_proj, m.o_proj, heads, kv, head_dim, rotary=True)
    if hasattr(m, "c_attn") and hasattr(m, "c_proj"):
        return "GPT-2-style fused c_attn (Conv1D): not balanced here"
    return None


def attention_views(model: nn.Module) -> tuple[list[HeadView], list[str]]:
    """The attention blocks of `model` that can be balanced, and 'name: reason' for those that cannot."""
    views, refused = [], []
    for name, m in model.named_modules():
        v = _view(name, m)
        if isinstance(v, HeadView):
            views.append(v)
        elif isinstance(v, str):
            refused.append(f"{name}: {v}")
    return views, refused
