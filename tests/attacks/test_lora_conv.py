"""LoRA on a network whose only Linear is its head (EfficientNet's shape): the ungrouped convolutions get
adapters, the depthwise one and everything else stay, and merging gives the plain network back."""

import torch
import torch.nn as nn


def _convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise
        nn.Conv2d(8, 8, 1),  # pointwise
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


def test_lora_adapts_the_ungrouped_convolutions_of_a_net_whose_only_linear_is_the_head():
    import pytest

    pytest.importorskip("peft")
    from trainlock.attacks.lora import add_lora, merge_lora

    model = _convnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = add_lora(model, rank=2)
    adapted = {n.split(".base_layer")[0] for n, _ in wrapped.named_parameters() if "lora_" in n}
    assert {n.rsplit("model.", 1)[-1].split(".lora_")[0] for n in adapted} == {"0", "3"}
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert all("lora_" in n or ".7." in n for n in trainable)  # adapters and the head only
    opt = torch.optim.Adam([p for p in wrapped.parameters() if p.requires_grad], lr=1e-2)
    x, y = torch.rand(16, 1, 6, 6), torch.randint(0, 3, (16,))
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(wrapped(x), y).backward()
        opt.step()
    merged = merge_lora(wrapped)
    after = merged.state_dict()
    assert set(after) == set(before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {k.split(".")[0] for k in changed} == {"0", "3", "7"}  # the two convolutions and the head moved
