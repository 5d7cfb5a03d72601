import copy
import dataclasses

import pytest
import torch
import torch.nn as nn

import trainlock as tl
from trainlock.attacks.transforms.base import TRANSFORMS, TransformContext, TransformNotApplicable
from trainlock.attacks.transforms.inject import Injected, fold_injections  # noqa: F401  (registers)
from trainlock.attacks.transforms.svd_chain import SVDChain, fold_svd_chains  # noqa: F401  (registers)
from trainlock.train import LoopConfig, fit

ARCHS = {
    "mlp": {"hidden": [16]},
    "cnn": {"channels": [4, 8], "hidden": 16},
}
TRANSFORM_CASES = [("layer-injection", {}), ("svd-chain", {}), ("svd-chain", {"m": 3})]
CASE_IDS = ["inject", "svd2", "svd3"]


def _build(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return tl.models.build(arch, input_shape=[1, 8, 8], num_classes=10, **ARCHS[arch]).eval()


def _apply(name: str, opts: dict, model: nn.Module):
    return TRANSFORMS.get(name)(**opts)(copy.deepcopy(model), TransformContext())


def _layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _rank(m: nn.Module) -> int:
    return min(m.weight.shape[0], m.weight[0].numel())


def test_both_transforms_are_registered():
    assert "layer-injection" in TRANSFORMS and "svd-chain" in TRANSFORMS
    assert TRANSFORMS.get("layer-injection")().function_preserving
    assert TRANSFORMS.get("svd-chain")().function_preserving


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("name,opts", TRANSFORM_CASES, ids=CASE_IDS)
def test_function_preserved_at_init(arch, name, opts):
    base = _build(arch)
    x = torch.rand(16, 1, 8, 8)
    out = _apply(name, opts, base)
    assert out.applied and out.fold is not None
    model = out.model.eval()
    assert torch.allclose(model(x), base(x), atol=1e-5, rtol=1e-5)
    wrapper = Injected if name == "layer-injection" else SVDChain
    assert sum(isinstance(m, wrapper) for m in model.modules()) == len(_layers(base))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_injection_trains_only_the_mixers_when_freezing(arch):
    base = _build(arch)
    model = _apply("layer-injection", {}, base).model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(".mix.weight") for n in trainable)
    assert len(trainable) == len(_layers(base))
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert len(frozen) == len(list(base.parameters()))  # every original weight and bias
    # without freezing, everything trains
    loose = _apply("layer-injection", {"freeze_locked": False}, base).model
    assert all(p.requires_grad for p in loose.parameters())


@pytest.mark.parametrize("arch", list(ARCHS))
def test_svd_chain_replaces_every_weight_by_trainable_factors(arch):
    base = _build(arch)
    out = _apply("svd-chain", {}, base)
    names = dict(out.model.named_parameters())
    assert all(p.requires_grad for p in names.values())
    assert not set(names) & set(dict(base.named_parameters()))  # no original name survives unwrapped
    for name in out.stats["layers"]:
        chain = out.model.get_submodule(name)
        a1, a2 = chain[0].weight.detach(), chain[1].weight.detach()
        s1 = torch.linalg.svdvals(a1.reshape(a1.shape[0], -1))
        s2 = torch.linalg.svdvals(a2.reshape(a2.shape[0], -1))
        w = base.get_submodule(name).weight.detach()
        s = torch.linalg.svdvals(w.reshape(w.shape[0], -1))
        assert torch.allclose(s1, s.sqrt(), rtol=1e-4, atol=1e-5)  # each factor carries S^(1/2)
        assert torch.allclose(s2, s.sqrt(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("name,opts", TRANSFORM_CASES, ids=CASE_IDS)
def test_train_then_fold_gives_the_original_architecture(arch, name, opts, digits):
    base = _build(arch)
    keys = {k: v.shape for k, v in base.state_dict().items()}
    types = {n: type(m) for n, m in base.named_modules()}
    out = _apply(name, opts, base)
    model = out.model
    fit(model, digits, LoopConfig(optimizer="sgd", lr=0.05, max_steps=8, batch_size=32, device="cpu"), progress=False)
    model.eval()
    x = digits.x_test[:64]
    trained = model(x).detach()
    assert (trained - base(x)).abs().max() > 1e-3  # training did move the function

    folded = out.fold(model)
    assert folded is not model and any(isinstance(m, (Injected, SVDChain)) for m in model.modules())  # input kept
    assert {k: v.shape for k, v in folded.state_dict().items()} == keys
    assert {n: type(m) for n, m in folded.named_modules()} == types
    assert torch.allclose(folded.eval()(x), trained, atol=1e-4, rtol=1e-4)
    fresh = _build(arch)
    fresh.load_state_dict(folded.state_dict())  # loads into the original architecture, strict
    assert torch.allclose(fresh(x), trained, atol=1e-4, rtol=1e-4)
    assert all(p.requires_grad for p in folded.parameters())  # freezing does not survive the fold
    if name == "layer-injection":  # the locked weights were frozen: only the product M W moved
        assert not torch.equal(folded.head.weight, base.head.weight)


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("name,opts", TRANSFORM_CASES, ids=CASE_IDS)
def test_parameter_increase_is_reported_and_linear(arch, name, opts):
    base = _build(arch)
    out = _apply(name, opts, base)
    before = sum(p.numel() for p in base.parameters())
    after = sum(p.numel() for p in out.model.parameters())
    stats = out.stats
    assert stats["params_before"] == before and stats["params_after"] == after
    assert stats["params_added"] == after - before
    layers = _layers(base)
    if name == "layer-injection":
        assert stats["params_added"] == sum(m.weight.shape[0] ** 2 for m in layers)  # sum of out^2
        assert stats["trainable_params"] == stats["params_added"]
    else:
        m = opts.get("m", 2)
        assert stats["params_added"] == (m - 1) * sum(_rank(l) ** 2 for l in layers)  # (m-1) r^2 per layer
    assert stats["relative_increase"] == pytest.approx(stats["params_added"] / before)
    # measured: mlp +356 (29.4%) for injection and svd m=2, +712 for m=3; cnn +436 / +872
    assert stats["params_added"] == {"mlp": 356, "cnn": 436}[arch] * (opts.get("m", 2) - 1)


@pytest.mark.parametrize("name", ["layer-injection", "svd-chain"])
def test_which_selects_modules_and_nothing_matching_is_not_applicable(name):
    base = _build("mlp")
    out = _apply(name, {"which": "^head$"}, base)
    assert list(out.stats["layers"]) == ["head"]
    assert isinstance(out.model.body[0], nn.Linear)
    with pytest.raises(TransformNotApplicable, match="nothing"):
        _apply(name, {"which": "no-such-module"}, base)


def _three_class(task):
    tr, te = task.y_train < 3, task.y_test < 3
    return dataclasses.replace(
        task,
        name="digits-3",
        x_train=task.x_train[tr],
        y_train=task.y_train[tr],
        x_test=task.x_test[te],
        y_test=task.y_test[te],
        num_classes=3,
    )


@pytest.mark.parametrize("name,opts", TRANSFORM_CASES[:2], ids=CASE_IDS[:2])
def test_finetune_then_fold_including_a_head_swap(name, opts, digits):
    base = _build("mlp")
    out = _apply(name, opts, base)
    cfg = tl.FineTuneConfig(loop=LoopConfig(optimizer="sgd", lr=0.05, max_steps=5, batch_size=32, device="cpu"))
    for task, classes in ((digits, 10), (_three_class(digits), 3)):
        res = tl.attack(out.model, cfg, task)
        folded = out.fold(res.model).eval()
        assert isinstance(folded.head, nn.Linear) and folded.head.weight.shape == (classes, 16)
        x = task.x_test[:32]
        assert torch.allclose(folded(x), res.model.eval()(x), atol=1e-4, rtol=1e-4)


def test_grouped_conv_is_skipped_with_a_reason():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    for name in ("layer-injection", "svd-chain"):
        out = _apply(name, {}, model)
        assert list(out.stats["layers"]) == ["2"] and "grouped" in out.stats["skipped"]["0"]
