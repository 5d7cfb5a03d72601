"""Input augmentation for the distillation locks (`fresh-distill`, `undo`): the `augment` option.

Distillation transfers what the teacher does on the inputs the student is shown; augmentation shows it more
of them ("function matching", Beyer et al. 2022, arXiv 2106.05237: teacher and student see the *same*
augmented view, and the target is the teacher's output on that view, so nothing about the label has to be
invented). Two kinds, chosen by `augment`:

- "images", for (N, C, H, W) inputs: a random crop of the zero-padded image (PAD_FRACTION of the side, at
  least one pixel), a horizontal flip with probability FLIP, and mixup of a MIX_FRACTION of the batch's rows
  with another row of the same batch (x' = lam x_i + (1 - lam) x_j, lam ~ U(0, 1)). A mixed row has no
  label: the lock scores it with the distillation term only (the `plain` mask says which rows keep theirs).
- "text", for token inputs (N, 2 or more, L) of integer ids (row 0: input ids, row 1: attention mask, then
  token types; `trainlock.tasks.text`): token dropout (an attended, non-special token becomes `fill_id`,
  the tokenizer's mask or unknown token, with probability DROP) and swaps of adjacent attended, non-special
  tokens (probability SWAP per pair, pairs not overlapping). The attention mask, the token types, padding
  and special tokens are never changed, so sequence lengths stay what they were.

More augmented inputs: more `loop.epochs` (every pass draws new views). The strengths are the module's
constants, not config fields. Randomness: a torch.Generator when one is passed, else torch's global CPU
generator (which a loop checkpoint saves and restores, so a resumed lock run draws the same views).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

KINDS = ("none", "images", "text")
HELP = (
    "augmentation of the distillation inputs (teacher and student see the same view): none; images "
    "((N, C, H, W) inputs: random crops of the padded image, horizontal flips, mixup within the batch); text "
    "(token-id inputs: token dropout and adjacent swaps, masks and padding unchanged). More views: more "
    "loop epochs"
)

PAD_FRACTION = 1 / 8  # crop padding: 4 pixels for 32x32, 1 for 8x8
FLIP = 0.5  # probability of a horizontal flip
MIX_FRACTION = 0.5  # fraction of a batch's rows replaced by a mixture with another row
DROP = 0.1  # text: probability that an editable token is dropped (becomes fill_id)
SWAP = 0.1  # text: probability that an editable adjacent pair is swapped


def check_kind(owner: str, kind: str) -> None:
    """ValueError unless `kind` is one of KINDS (names the option and the owner)."""
    if kind not in KINDS:
        raise ValueError(f"{owner}: augment must be one of {KINDS}, got {kind!r}")


def check_inputs(owner: str, kind: str, x: torch.Tensor) -> None:
    """ValueError, naming the `augment` option, unless `x` (a batch or a split) suits augmentation `kind`."""
    check_kind(owner, kind)
    shape = tuple(x.shape)
    if kind == "images" and (x.dim() != 4 or not x.is_floating_point()):
        raise ValueError(
            f"{owner}: augment='images' needs image inputs (N, C, H, W) of floats, got {x.dtype} of shape {shape}; "
            f"use augment='none' for flat or token inputs"
        )
    if kind == "text" and (x.dim() != 3 or x.shape[1] < 2 or x.is_floating_point() or x.dtype == torch.bool):
        raise ValueError(
            f"{owner}: augment='text' needs token inputs (N, 2 or 3, L) of integer ids (ids, attention mask, "
            f"token types), got {x.dtype} of shape {shape}; use augment='images' or 'none' for other inputs"
        )


def _rand(shape, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator)


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image of (N, C, H, W) `x` cut at a random offset out of its copy zero-padded by `pad` pixels per
    side (the same size as before). pad=0: `x` unchanged."""
    if pad <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (N, W)
    idx = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def random_flip(
    x: torch.Tensor, p: float = FLIP, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x with each image mirrored left-right with probability p, the bool mask of the flipped rows)."""
    flipped = (_rand((x.shape[0],), generator) < p).to(x.device)
    return torch.where(flipped[:, None, None, None], x.flip(-1), x), flipped


def mixup(
    x: torch.Tensor, fraction: float = MIX_FRACTION, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix a `fraction` of the rows with another row of the batch: (x', mixed mask, partner index, lam), with
    x'[i] = lam[i] x[i] + (1 - lam[i]) x[partner[i]] on mixed rows (lam ~ U(0, 1), partner != i) and x'[i] = x[i]
    elsewhere."""
    n = x.shape[0]
    partner = torch.randperm(n, generator=generator)
    lam = _rand((n,), generator)
    mixed = (_rand((n,), generator) < fraction) & (partner != torch.arange(n))
    partner, lam, mixed = partner.to(x.device), lam.to(x.device, x.dtype), mixed.to(x.device)
    lam = torch.where(mixed, lam, torch.ones_like(lam))
    shape = (n,) + (1,) * (x.dim() - 1)
    out = lam.view(shape) * x + (1 - lam.view(shape)) * x[partner]
    return torch.where(mixed.view(shape), out, x), mixed, partner, lam


def editable(x: torch.Tensor, protect: Iterable[int] = ()) -> torch.Tensor:
    """(N, L) bool: the attended tokens of token inputs `x` (N, >=2, L) whose id is not in `protect`."""
    ids, mask = x[:, 0], x[:, 1]
    out = mask != 0
    protect = list(protect)
    if protect:
        out &= ~torch.isin(ids, torch.tensor(protect, dtype=ids.dtype, device=ids.device))
    return out


def token_dropout(
    x: torch.Tensor,
    p: float = DROP,
    fill_id: int | None = None,
    protect: Iterable[int] = (),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Token inputs with each editable token replaced, with probability p, by `fill_id` (None: by an editable
    token of the batch drawn at random). Masks, token types, padding and protected ids are unchanged."""
    can = editable(x, protect)
    drop = (_rand(can.shape, generator) < p).to(x.device) & can
    if not bool(drop.any()):
        return x
    ids = x[:, 0]
    if fill_id is None:
        pool = ids[can]
        pick = torch.randint(0, pool.numel(), can.shape, generator=generator).to(x.device)
        fill = pool[pick]
    else:
        fill = torch.full_like(ids, int(fill_id))
    out = x.clone()
    out[:, 0] = torch.where(drop, fill, ids)
    return out


def token_swap(
    x: torch.Tensor, p: float = SWAP, protect: Iterable[int] = (), generator: torch.Generator | None = None
) -> torch.Tensor:
    """Token inputs with adjacent editable tokens swapped, each pair with probability p, no token in two swaps.
    Each row keeps its multiset of ids; masks, token types, padding and protected ids are unchanged."""
    can = editable(x, protect)
    n, length = can.shape
    if length < 2:
        return x
    coin = (_rand((n, length - 1), generator) < p).to(x.device)
    ids = x[:, 0].clone()
    used = torch.zeros(n, dtype=torch.bool, device=x.device)  # position i was the right half of a swap
    for i in range(length - 1):
        take = can[:, i] & can[:, i + 1] & coin[:, i] & ~used
        left = ids[:, i].clone()
        ids[:, i] = torch.where(take, ids[:, i + 1], ids[:, i])
        ids[:, i + 1] = torch.where(take, left, ids[:, i + 1])
        used = take
    out = x.clone()
    out[:, 0] = ids
    return out


class Augmenter:
    """Callable: a batch -> (its augmented view, `plain`: the bool mask of rows that keep their label, or None
    when every row does). `fill_id` / `protect`: the text tokenizer's drop token and special ids."""

    def __init__(
        self,
        kind: str,
        owner: str = "augment",
        *,
        fill_id: int | None = None,
        protect: Iterable[int] = (),
        generator: torch.Generator | None = None,
    ):
        check_kind(owner, kind)
        self.kind, self.owner, self.fill_id = kind, owner, fill_id
        self.protect = tuple(int(i) for i in protect)
        self.generator = generator

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.kind == "none":
            return x, None
        check_inputs(self.owner, self.kind, x)
        g = self.generator
        if self.kind == "images":
            pad = max(1, round(min(x.shape[-2:]) * PAD_FRACTION))
            x = random_crop(x, pad, g)
            x, _ = random_flip(x, FLIP, g)
            x, mixed, _, _ = mixup(x, MIX_FRACTION, g)
            return x, ~mixed
        x = token_dropout(x, DROP, self.fill_id, self.protect, g)
        return token_swap(x, SWAP, self.protect, g), None

    @classmethod
    def for_model(cls, kind: str, model, owner: str = "augment") -> Augmenter:
        """An augmenter for `model`'s inputs: for text, the drop token and special ids of its tokenizer
        (`model.tokenizer`, e.g. `trainlock.models.hf.HFClassifier`; without one, dropped tokens are replaced
        by tokens of the batch and no id is protected)."""
        tok = getattr(model, "tokenizer", None)
        fill = None
        protect: tuple[int, ...] = ()
        if tok is not None and kind == "text":
            fill = getattr(tok, "mask_token_id", None)
            fill = getattr(tok, "unk_token_id", None) if fill is None else fill
            protect = tuple(getattr(tok, "all_special_ids", None) or ())
        return cls(kind, owner, fill_id=fill, protect=protect)


__all__ = [
    "HELP",
    "KINDS",
    "Augmenter",
    "check_inputs",
    "check_kind",
    "editable",
    "mixup",
    "random_crop",
    "random_flip",
    "token_dropout",
    "token_swap",
]
