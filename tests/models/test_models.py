"""Tests for the built-in models; every registered model name gets the generic tests."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn as nn

from trainlock.models import MODELS, build, find_head, replace_head

# Tiny sizes per built-in model; a model missing here is tested at its defaults.
TINY: dict[str, dict] = {
    "mlp": {"hidden": (16, 8)},
    "cnn": {"channels": (4, 8), "hidden": 16},
    "resnet18": {"width": 4},
    "transformer": {"dim": 16, "depth": 1, "heads": 2},
    **{f"effnet-lite{i}": {"size": 32, "pretrained": False} for i in range(3)},
}
# Input shapes each built-in model must support (others skip an input shape they reject).
IMAGE, SMALL, VECTOR = (1, 28, 28), (1, 8, 8), (40,)
SMALL_KW = {"transformer": {"patch": 4}}
SUPPORTED = {
    "mlp": {IMAGE, SMALL, VECTOR},
    "cnn": {IMAGE, SMALL},
    "resnet18": {IMAGE, SMALL},
    "transformer": {IMAGE, SMALL, VECTOR},
}
NAMES = [
    n for n in MODELS.names() if not MODELS.get(n).__module__.endswith(".hf")
]  # image / vector models; text: test_hf.py


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    torch.manual_seed(0)


def make(name: str, input_shape=IMAGE, num_classes: int = 10, **extra) -> nn.Module:
    kwargs = {**TINY.get(name, {}), **(SMALL_KW.get(name, {}) if input_shape == SMALL else {}), **extra}
    return build(name, input_shape=input_shape, num_classes=num_classes, **kwargs)


def test_builtins_registered() -> None:
    assert set(SUPPORTED) <= set(NAMES)


@pytest.mark.parametrize("shape", [IMAGE, SMALL, VECTOR], ids=["28x28", "8x8", "vector"])
@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_and_finite(name: str, shape: tuple[int, ...]) -> None:
    if name in SUPPORTED and shape not in SUPPORTED[name]:
        with pytest.raises(ValueError, match=name):
            make(name, shape)
        return
    try:
        model = make(name, shape, num_classes=7)
    except ValueError:
        if name in SUPPORTED:
            raise
        pytest.skip(f"{name} does not accept input shape {shape}")
    assert model.input_shape == shape and model.num_classes == 7
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_config_rebuilds_same_architecture(name: str) -> None:
    model = make(name)
    json.dumps(model.config)  # plain data, so it can be saved next to the weights
    assert model.config["input_shape"] == list(IMAGE) and model.config["num_classes"] == 10
    again = build(name, **model.config)
    a, b = model.state_dict(), again.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    again.load_state_dict(a)
    model.eval(), again.eval()
    x = torch.randn(2, *IMAGE)
    torch.testing.assert_close(model(x), again(x))


@pytest.mark.parametrize("name", NAMES)
def test_find_head_is_head(name: str) -> None:
    model = make(name)
    path, head = find_head(model)
    assert path == "head" and head is model.head
    assert isinstance(head, nn.Linear) and head.out_features == 10


@pytest.mark.parametrize("name", NAMES)
def test_replace_head(name: str) -> None:
    model = make(name)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    replace_head(model, 3, seed=1)
    assert model.head.out_features == 3
    model.eval()  # so a forward does not update BatchNorm running stats
    assert model(torch.randn(2, *IMAGE)).shape == (2, 3)
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k


def test_find_head_on_plain_sequential() -> None:
    seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3), nn.Softmax(dim=-1))
    assert find_head(seq) == ("2", seq[2])
    replace_head(seq, 5)
    assert seq(torch.randn(2, 4)).shape == (2, 5)
    with pytest.raises(ValueError, match=r"no nn.Linear"):
        find_head(nn.Sequential(nn.ReLU()))


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("cnn", {"input_shape": (784,)}, "3-D"),
        ("cnn", {"input_shape": (1, 2, 2)}, "H and W"),
        ("resnet18", {"input_shape": (28, 28)}, "3-D"),
        ("transformer", {"input_shape": (1, 28, 28), "patch": 5}, "divisible by patch"),
        ("transformer", {"input_shape": (10,), "token_dim": 4}, "divisible by token_dim"),
        ("transformer", {"input_shape": (4, 4)}, r"\(C, H, W\) or \(D,\)"),
        ("transformer", {"input_shape": (1, 28, 28), "dim": 10, "heads": 4}, "divisible by heads"),
        ("mlp", {"input_shape": ()}, "input_shape"),
        ("mlp", {"input_shape": (1, 28, 28), "activation": "swish"}, "activation"),
        ("mlp", {"input_shape": (1, 28, 28), "num_classes": 0}, "num_classes"),
    ],
)
def test_bad_arguments_raise_value_error(name: str, kwargs: dict, match: str) -> None:
    kwargs = {"num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        build(name, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_bad_kwarg_is_type_error_naming_model(name: str) -> None:
    with pytest.raises(ValueError, match=rf"model '{name}'.*accepts: input_shape, num_classes"):
        build(name, input_shape=IMAGE, num_classes=10, no_such_size=3)


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name: str) -> None:
    model = make(name)
    x, y = torch.randn(4, *IMAGE), torch.randint(0, 10, (4,))
    nn.functional.cross_entropy(model(x), y).backward()
    for k, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, k


def test_mlp_activations_and_hidden() -> None:
    for act, cls in [("relu", nn.ReLU), ("tanh", nn.Tanh), ("gelu", nn.GELU)]:
        model = build("mlp", input_shape=(5,), num_classes=2, hidden=(3,), activation=act)
        assert any(isinstance(m, cls) for m in model.modules())
    linear = build("mlp", input_shape=(5,), num_classes=2, hidden=())
    assert [n for n, m in linear.named_modules() if isinstance(m, nn.Linear)] == ["head"]


def test_transformer_has_named_linears() -> None:
    model = make("transformer", depth=2)
    names = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert {"q", "k", "v", "o", "fc1", "fc2", "embed", "head"} <= names
    assert model.pos.shape == (1, 16, 16)  # 28x28 / 7x7 patches = 16 tokens, dim 16
