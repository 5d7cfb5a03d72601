"""LoRA fine-tuning through `peft`: low-rank adapters on the model's linear maps, the head trained in full,
merged back into plain weights when the attack ends (so evaluation and saving see an ordinary model)."""

from __future__ import annotations

import torch.nn as nn

from ..models import find_head


def _adapted_names(model: nn.Module, head: str) -> list[str]:
    """Every Linear but the head (by name suffix, as peft matches them); a network without one (a CNN such as
    EfficientNet: only its head is Linear) gets its ungrouped Conv2d layers instead, by full name (a depthwise
    convolution has one input channel per filter: no low-rank update to learn)."""

    def is_head(name: str) -> bool:
        return name == head or name.endswith("." + head)

    linear = {
        n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear) and n and not is_head(n)
    }
    if linear:
        return sorted(linear)
    return sorted(
        n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1 and n and not is_head(n)
    )


def add_lora(model: nn.Module, rank: int, alpha: float | None = None, targets: tuple[str, ...] = ()) -> nn.Module:
    """Wrap `model` (in place for a trainlock HFClassifier, whose inner transformers model is wrapped)
    with LoRA adapters of `rank` on `targets` (module-name suffixes; default: every Linear but the head, or
    the ungrouped convolutions of a network whose only Linear is its head).
    Only the adapters and the head train."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ValueError("LoRA attacks need peft: pip install 'trainlock[text]'") from None
    inner = getattr(model, "model", None) if hasattr(model, "encode_task") else model
    head, _ = find_head(inner)
    head_name = head.rsplit(".", 1)[-1]
    names = list(targets) or _adapted_names(inner, head_name)
    if not names:
        raise ValueError("LoRA: the model has no nn.Linear besides its head, nor an ungrouped nn.Conv2d, to adapt")
    cfg = LoraConfig(
        r=int(rank),
        lora_alpha=float(alpha if alpha is not None else 2 * rank),
        target_modules=names,
        modules_to_save=[head_name],
        lora_dropout=0.0,
        bias="none",
    )
    wrapped = get_peft_model(inner, cfg)
    if inner is model:
        return wrapped
    model.model = wrapped
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the weights and drop the peft wrapper."""
    inner = getattr(model, "model", None) if hasattr(model, "encode_task") else model
    merged = inner.merge_and_unload()
    if inner is model:
        return merged
    model.model = merged
    return model
