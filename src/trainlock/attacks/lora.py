"""LoRA fine-tuning through `peft`: low-rank adapters on the model's linear maps, the head trained in full,
merged back into plain weights when the attack ends (so evaluation and saving see an ordinary model)."""

from __future__ import annotations

import torch.nn as nn

from ..models import find_head


def _linear_names(model: nn.Module, head: str) -> list[str]:
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and name and name != head and not name.endswith("." + head)
        }
    )


def add_lora(model: nn.Module, rank: int, alpha: float | None = None, targets: tuple[str, ...] = ()) -> nn.Module:
    """Wrap `model` (in place for a trainlock HFClassifier, whose inner transformers model is wrapped)
    with LoRA adapters of `rank` on `targets` (module-name suffixes; default: every Linear but the head).
    Only the adapters and the head train."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ValueError("LoRA attacks need peft: pip install 'trainlock[text]'") from None
    inner = getattr(model, "model", None) if hasattr(model, "encode_task") else model
    head, _ = find_head(inner)
    head_name = head.rsplit(".", 1)[-1]
    names = list(targets) or _linear_names(inner, head_name)
    if not names:
        raise ValueError("LoRA: the model has no nn.Linear besides its head to adapt")
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
