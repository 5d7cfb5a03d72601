"""LoRA on a network whose only Linear is its head (EfficientNet's shape): the ungrouped convolutions get
adapters (a Conv2d subclass only when pointwise), the depthwise one and everything else stay, and merging gives
back a network with the same weights' names and function."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F


class SamePadConv(nn.Conv2d):
    """Like EfficientNet's static "same" padding convolution: a required size argument, padding done outside."""

    def __init__(self, cin, cout, k, *, image_size, **kw):
        super().__init__(cin, cout, k, padding=0, **kw)
        self.pad = nn.ZeroPad2d(k // 2) if k > 1 else nn.Identity()

    def forward(self, x):
        return F.conv2d(self.pad(x), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = SamePadConv(1, 8, 3, image_size=6)  # not pointwise: peft would pad it wrongly, left alone
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)  # depthwise: no low-rank update
        self._conv_head = SamePadConv(8, 8, 1, image_size=6)  # pointwise subclass; its name ends in "head"
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = F.relu(self.conv(F.relu(self.stem(x))))
        x = F.relu(self._conv_head(self.dw(x)))
        return self.head(x.mean((2, 3)))


def test_lora_adapts_the_ungrouped_convolutions_of_a_net_whose_only_linear_is_the_head():
    pytest.importorskip("peft")
    from trainlock.attacks.lora import add_lora, merge_lora

    model = Net()
    x, y = torch.rand(16, 1, 6, 6), torch.randint(0, 3, (16,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out_before = model(x)
    wrapped = add_lora(model, rank=2)
    assert torch.allclose(wrapped(x), out_before, atol=1e-6)  # adapters start at zero: the same function
    adapted = {n.split(".lora_")[0].rsplit("model.", 1)[-1] for n, _ in wrapped.named_parameters() if "lora_" in n}
    assert adapted == {"conv", "_conv_head"}
    trainable = {n.rsplit("model.", 1)[-1] for n, p in wrapped.named_parameters() if p.requires_grad}
    assert all("lora_" in n for n in trainable - {"head.weight", "head.bias"}) and "head.weight" in trainable
    opt = torch.optim.Adam([p for p in wrapped.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(wrapped(x), y).backward()
        opt.step()
    out_trained = wrapped(x).detach()
    merged = merge_lora(wrapped)
    assert torch.allclose(merged(x), out_trained, atol=1e-5)  # merging keeps the trained function
    after = merged.state_dict()
    assert set(after) == set(before)
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"conv", "_conv_head", "head"}  # the two adapted convolutions and the head moved
