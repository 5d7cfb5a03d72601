"""LoRA fine-tuning through `peft`: low-rank adapters on the model's linear maps, the head trained in full,
merged back into plain weights when the attack ends (so evaluation and saving see an ordinary model)."""

from __future__ import annotations

import torch.nn as nn

from ..models import find_head


def _pointwise(m: nn.Conv2d) -> bool:
    return m.kernel_size == (1, 1) and m.stride == (1, 1) and m.dilation == (1, 1) and m.padding in (0, (0, 0))


def _adapted_names(model: nn.Module, head: str) -> list[str]:
    """Every Linear but the head (by name suffix, as peft matches them); a network without one (a CNN such as
    EfficientNet: only its head is Linear) gets its ungrouped convolutions instead, by full name (a depthwise
    convolution has one input channel per filter: no low-rank update to learn). A subclass of nn.Conv2d (such as
    EfficientNet's static "same" padding convolution) is adapted only when pointwise: peft builds the adapters as
    the layer's own class with its padding argument, right only where there is no padding to add."""

    def is_head(name: str) -> bool:
        return name == head or name.endswith("." + head)

    linear = {
        n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear) and n and not is_head(n)
    }
    if linear:
        return sorted(linear)
    return sorted(
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
        and m.groups == 1
        and n
        and not is_head(n)
        and (type(m) is nn.Conv2d or _pointwise(m))
    )


def _plain_convolutions(model: nn.Module, names: list[str]) -> None:
    """Replace each named pointwise convolution of an nn.Conv2d subclass by a plain nn.Conv2d holding the same
    weight and bias tensors (the same function: a 1x1, stride-1 convolution pads nothing), so that peft can build
    its adapters from the layer's class."""
    modules = dict(model.named_modules())
    for name in names:
        m = modules.get(name)
        if not isinstance(m, nn.Conv2d) or type(m) is nn.Conv2d or not _pointwise(m):
            continue
        plain = nn.Conv2d(m.in_channels, m.out_channels, 1, bias=m.bias is not None, device=m.weight.device)
        plain.weight, plain.bias = m.weight, m.bias
        parent, _, child = name.rpartition(".")
        setattr(modules[parent] if parent else model, child, plain)


def add_lora(model: nn.Module, rank: int, alpha: float | None = None, targets: tuple[str, ...] = ()) -> nn.Module:
    """Wrap `model` (in place for a trainlock HFClassifier, whose inner transformers model is wrapped)
    with LoRA adapters of `rank` on `targets` (module-name suffixes; default: every Linear but the head, or
    the ungrouped convolutions of a network whose only Linear is its head; see `_adapted_names`).
    Only the adapters and the head train."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ValueError("LoRA attacks need peft: pip install 'trainlock[text]'") from None
    inner = getattr(model, "model", None) if hasattr(model, "encode_task") else model
    head, head_module = find_head(inner)
    head_name = head.rsplit(".", 1)[-1]
    names = list(targets) or _adapted_names(inner, head_name)
    if not names:
        raise ValueError("LoRA: the model has no nn.Linear besides its head, nor an ungrouped nn.Conv2d, to adapt")
    _plain_convolutions(inner, names)
    cfg = LoraConfig(
        r=int(rank),
        lora_alpha=float(alpha if alpha is not None else 2 * rank),
        target_modules=names,
        lora_dropout=0.0,
        bias="none",
    )
    wrapped = get_peft_model(inner, cfg)
    # the head trains in full, in place (not through peft's modules_to_save, which matches names by suffix:
    # "head" would also catch EfficientNet's "_conv_head")
    for p in head_module.parameters():
        p.requires_grad_(True)
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
