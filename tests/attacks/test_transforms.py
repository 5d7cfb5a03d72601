import copy
import math

import pytest
import torch
import torch.nn as nn

import trainlock as tl
from trainlock.attacks.transforms import TRANSFORMS, TransformContext, TransformNotApplicable, TransformOutcome
from trainlock.attacks.transforms.graph import find_chains, linear_pairs, norm_pairs, sigma_max_by_layer
from trainlock.locks import find_lockable
from trainlock.locks.compress import magnitude_prune, quantize, sublevel_radius, weight_decay_pull

SHAPE = [1, 8, 8]


def _mlp(activation="relu"):
    return tl.models.build("mlp", input_shape=SHAPE, num_classes=10, hidden=[16, 8], activation=activation)


def _cnn():
    return tl.models.build("cnn", input_shape=SHAPE, num_classes=10, channels=[4, 8], hidden=16)


def _resnet():
    m = tl.models.build("resnet18", input_shape=SHAPE, num_classes=10, width=4)
    with torch.no_grad():  # non-trivial BatchNorm state: random affine, running stats from a few batches
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
        m.train()
        for _ in range(3):
            m(torch.randn(32, *SHAPE) * 2 + 0.3)
    return m.eval()


def _transformer():
    return tl.models.build("transformer", input_shape=SHAPE, num_classes=10, dim=16, depth=1, heads=2, patch=4)


class _LNNet(nn.Module):
    """Linear -> LayerNorm -> ReLU -> Linear on flattened images."""

    input_shape = tuple(SHAPE)

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        return self.body(x)


class _LinearPair(nn.Module):
    """Linear -> Dropout -> Linear -> ReLU -> Linear head (the first pair has no nonlinearity)."""

    input_shape = tuple(SHAPE)

    def __init__(self, inner=16, out=12):
        super().__init__()
        self.a = nn.Linear(64, inner)
        self.drop = nn.Dropout(0.1)
        self.c = nn.Linear(inner, out)
        self.head = nn.Linear(out, 10)

    def forward(self, x):
        return self.head(torch.relu(self.c(self.drop(self.a(x.flatten(1))))))


ARCHS = {
    "mlp": _mlp,
    "cnn": _cnn,
    "resnet18": _resnet,
    "transformer": _transformer,
    "ln-net": _LNNet,
    "linear-pair": _LinearPair,
}
# where the built-in function-preserving transforms must apply (others may raise TransformNotApplicable)
EXPECTED = {
    "rescale": {"mlp", "cnn", "resnet18", "linear-pair"},  # not through a LayerNorm
    "norm-absorb": {"resnet18", "ln-net"},
    "merge": {"transformer", "linear-pair"},
}


def _x(n=16):
    return torch.randn(n, *SHAPE)


def _run(name, model, ctx=None, **opts):
    return TRANSFORMS.get(name)(**opts)(model, ctx or TransformContext(sample=_x()))


# ------------------------------------------------------------------------------------------------ all


@pytest.mark.parametrize("name", TRANSFORMS.names())
def test_smoke_on_tiny_cnn(name):
    model = _cnn().eval()
    x = _x()
    try:
        out = _run(name, model, TransformContext(sample=x))
    except TransformNotApplicable as e:
        assert str(e).strip()
        return
    assert isinstance(out, TransformOutcome)
    assert isinstance(TRANSFORMS.get(name)().function_preserving, bool)
    with torch.no_grad():
        y = out.model.eval()(x)
    assert y.shape == (16, 10) and torch.isfinite(y).all()
    assert out.note


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("name", TRANSFORMS.names())
def test_function_preserving(name, arch):
    transform = TRANSFORMS.get(name)()
    if not transform.function_preserving:
        pytest.skip(f"{name} is not function-preserving")
    model = ARCHS[arch]().eval()
    x = _x()
    with torch.no_grad():
        ref = model(x)
    try:
        out = transform(copy.deepcopy(model), TransformContext(sample=x))
    except TransformNotApplicable as e:
        assert str(e).strip()
        assert arch not in EXPECTED.get(name, set()), f"{name} should apply to {arch}: {e}"
        pytest.skip(str(e))
    if name in EXPECTED:
        assert arch in EXPECTED[name], f"{name} unexpectedly applied to {arch}: {out.note}"
    with torch.no_grad():
        got = out.model.eval()(x)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------ graph


def test_graph_finds_chains_across_flatten_and_batchnorm():
    cnn = _cnn()
    chains = {c.describe(): c for c in find_chains(cnn)}
    assert set(chains) == {
        "features.0 -> relu -> maxpool2d -> features.3",
        "features.3 -> relu -> maxpool2d -> flatten -> fc",
        "fc -> relu -> head",
    }
    assert chains["features.3 -> relu -> maxpool2d -> flatten -> fc"].group == 4  # 8 channels x (2 x 2)
    assert [a for _, a, _ in linear_pairs(cnn)] == ["relu", "relu", "relu"]
    res = _resnet()
    assert len(norm_pairs(res)) == 20  # every conv feeds a BatchNorm
    assert len(linear_pairs(res)) == 0
    assert len(linear_pairs(res, include_norm=True)) == 8  # conv1 -> bn1 -> relu -> conv2 in every block


def test_graph_falls_back_to_sequential_scan():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace this module
                x = -x
            return self.body(x)

    pairs = linear_pairs(Untraceable())
    assert len(pairs) == 1 and pairs[0][1] == "relu"


def test_graph_follows_view_flatten_with_size_queries():
    class ViewNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pool, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(2), nn.Linear(16, 5)

        def forward(self, x):
            h = self.pool(torch.relu(self.conv(x)))
            return self.fc(h.view(h.size(0), -1))

    (chain,) = find_chains(ViewNet())
    assert chain.describe() == "conv -> relu -> adaptiveavgpool2d -> view -> fc" and chain.group == 4


# ------------------------------------------------------------------------------------------------ rescale


def test_rescale_refuses_tanh():
    with pytest.raises(TransformNotApplicable, match="tanh"):
        _run("rescale", _mlp("tanh"))


@pytest.mark.parametrize("mode", ["vector", "scalar"])
def test_rescale_undoes_an_inflated_layer(mode):
    model = _cnn().eval()
    with torch.no_grad():  # inflate fc, compensate in head: the same function
        model.fc.weight.mul_(100)
        model.fc.bias.mul_(100)
        model.head.weight.div_(100)
    x = _x()
    with torch.no_grad():
        ref = model(x)
    before = max(sigma_max_by_layer(model).values())
    out = _run("rescale", model, TransformContext(sample=x), mode=mode)
    after = max(sigma_max_by_layer(out.model).values())
    assert after < before / 10
    assert out.stats["max_sigma_after"] == pytest.approx(after)
    with torch.no_grad():
        torch.testing.assert_close(out.model(x), ref, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------ norm-absorb


def test_norm_absorb_equalizes_batchnorm_fed_rows():
    model = _resnet()
    with torch.no_grad():
        model.stages[0][0].conv1.weight[0].mul_(50)  # one inflated output channel
    x = _x()
    with torch.no_grad():
        ref = model(x)
    out = _run("norm-absorb", model, TransformContext(sample=x))
    w = out.model.stages[0][0].conv1.weight.detach().flatten(1).norm(dim=1)
    assert torch.allclose(w, w.median().expand_as(w), rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(out.model(x), ref, rtol=1e-4, atol=1e-5)


def test_norm_absorb_layernorm_without_eps_fix_is_close():
    model = _LNNet().eval()
    with torch.no_grad():
        model.body[1].weight.mul_(30)
    x = _x()
    with torch.no_grad():
        ref = model(x)
    out = _run("norm-absorb", model, TransformContext(sample=x), adjust_eps=False)
    with torch.no_grad():
        err = (out.model(x) - ref).abs().max().item()
    assert "eps" in out.note and err < 1e-4


# ------------------------------------------------------------------------------------------------ merge


def _cond(w):
    s = torch.linalg.svdvals(w.detach().double())
    s = s[s > s[0] * 1e-8]
    return float(s[0] / s[-1])


def test_merge_refactorizes_a_linear_pair_balanced():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    with torch.no_grad():  # an inflated, ill-conditioned first factor
        U, S, Vh = torch.linalg.svd(model[0].weight, full_matrices=False)
        S[0] *= 100
        model[0].weight.copy_(U @ torch.diag(S) @ Vh)
    x = torch.randn(32, 8)
    with torch.no_grad():
        ref = model(x)
        M = model[1].weight @ model[0].weight
    cond_before = max(_cond(model[0].weight), _cond(model[1].weight))
    out = _run("merge", model, TransformContext(sample=x), fold="never")
    m = out.model
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(m[1].weight @ m[0].weight, M, rtol=1e-4, atol=1e-5)  # one effective layer
    assert m[0].weight.shape == (16, 8) and m[1].weight.shape == (4, 16)
    assert torch.count_nonzero(m[0].bias) == 0
    s1, s2 = (torch.linalg.matrix_norm(w.detach(), 2) for w in (m[0].weight, m[1].weight))
    assert s1 == pytest.approx(float(s2), rel=1e-4)  # balanced
    assert max(_cond(m[0].weight), _cond(m[1].weight)) < cond_before
    assert "re-factorized" in out.note


def test_merge_folds_a_compensation_layer():
    model = _LinearPair(inner=16, out=16).eval()  # square second layer: C after W~
    x = _x()
    with torch.no_grad():
        ref = model(x)
        M = model.c.weight @ model.a.weight
    out = _run("merge", model, TransformContext(sample=x))
    m = out.model
    assert isinstance(m.c, nn.Identity) and m.a.weight.shape == (16, 64)
    with torch.no_grad():
        torch.testing.assert_close(m.a.weight, M, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-5)
    assert [l.name for l in find_lockable(m)] == ["a.weight", "head.weight"]
    assert "folded" in out.note


def test_merge_fold_refused_when_the_architecture_needs_the_layer():
    class ReadsWidth(_LinearPair):
        def forward(self, x):
            h = self.c(self.drop(self.a(x.flatten(1))))
            return self.head(torch.relu(h[:, : self.c.out_features]))  # an Identity has no out_features

    model = ReadsWidth(inner=16, out=16).eval()
    x = _x()
    with torch.no_grad():
        ref = model(x)
    out = _run("merge", model, TransformContext(sample=x), fold="always")
    assert isinstance(out.model.c, nn.Linear)  # not folded: re-factorized instead
    with torch.no_grad():
        torch.testing.assert_close(out.model(x), ref, rtol=1e-4, atol=1e-5)
    assert out.stats["merged"]["a -> dropout -> c"]["fold_refused"]


def test_pairs_whose_parameters_are_read_elsewhere_are_left_alone():
    class UsesBias(_LinearPair):
        def forward(self, x):
            return self.head(torch.relu(self.c(self.a(x.flatten(1))) + self.c.bias))

    model = UsesBias(inner=16, out=16).eval()
    assert [c.describe() for c in find_chains(model)] == []  # c's bias is read outside the chain
    with pytest.raises(TransformNotApplicable):
        _run("merge", model)


def test_merge_balances_attention_heads():
    model = _transformer().eval()
    attn = model.layers[0].attn
    with torch.no_grad():
        attn.q.weight.mul_(50)
        attn.k.weight.div_(50)
        attn.v.weight.mul_(50)
        attn.o.weight.div_(50)
    before = sigma_max_by_layer(model)
    x = _x()
    with torch.no_grad():
        ref = model(x)
    out = _run("merge", model, TransformContext(sample=x))
    after = sigma_max_by_layer(out.model)
    for n in ("q", "v"):
        assert after[f"layers.0.attn.{n}.weight"] < before[f"layers.0.attn.{n}.weight"] / 10
    with torch.no_grad():
        torch.testing.assert_close(out.model(x), ref, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------ others


def test_temperature_reset_keeps_argmax_and_sets_unit_spread():
    model = _cnn().eval()
    x = _x(64)
    with torch.no_grad():
        ref = model(x)
    out = _run("temperature-reset", model, TransformContext(sample=x))
    assert TRANSFORMS.get("temperature-reset")().function_preserving is False
    assert "argmax-preserving" in out.note
    with torch.no_grad():
        got = out.model(x)
    assert torch.equal(got.argmax(1), ref.argmax(1))
    assert got.var(dim=1, unbiased=False).mean().sqrt().item() == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(TransformNotApplicable, match="sample"):
        _run("temperature-reset", _cnn(), TransformContext())


@pytest.mark.parametrize("mode", ["clip", "renorm"])
def test_sv_clip_restores_recorded_sigma(mode):
    model = _cnn().eval()
    pre = sigma_max_by_layer(model)
    with torch.no_grad():  # "lock": inflate every weight's top singular value
        for l in find_lockable(model):
            W = l.param.flatten(1)
            U, S, Vh = torch.linalg.svd(W, full_matrices=False)
            S[0] *= 20
            l.param.copy_((U @ torch.diag(S) @ Vh).reshape(l.param.shape))
    meta = {
        "type": "specdef",
        "sigma_before": {"layers": {k: [v, v / 2] for k, v in pre.items()}, "max_sigma": max(pre.values())},
    }
    blind = _run("sv-clip", copy.deepcopy(model), TransformContext(sample=_x(), lock_meta=meta), mode=mode)
    assert all(v["source"] != "recorded" for v in blind.stats["layers"].values())  # blind unless asked
    out = _run("sv-clip", model, TransformContext(sample=_x(), lock_meta=meta), mode=mode, use_record=True)
    got = sigma_max_by_layer(out.model)
    for k, v in pre.items():
        assert got[k] == pytest.approx(v, rel=1e-4)
        assert out.stats["sigma_max"][k]["before"] > 10 * v
    assert all(v["source"] == "recorded" for v in out.stats["layers"].values())


def test_sv_clip_without_record_uses_spectrum_statistics():
    model = _cnn().eval()
    with torch.no_grad():
        model.fc.weight.mul_(10)
        model.fc.weight[:, 0] += 5.0  # a rank-1 spike far above the bulk
    out = _run("sv-clip", model, TransformContext(sample=_x()), spread=3.0)
    s = torch.linalg.svdvals(out.model.fc.weight.detach().double())
    assert s[0] <= 3.0 * out.stats["layers"]["fc.weight"]["threshold"] / 3.0 * (1 + 1e-6)
    assert out.stats["layers"]["fc.weight"]["action"] == "clip"


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("fraction", [0.3, 0.5])
def test_prune_exact_sparsity(scope, fraction):
    model = _cnn()
    masks = magnitude_prune(model, fraction, scope)
    weights = {l.name: l.param for l in find_lockable(model)}
    if scope == "global":
        total = sum(p.numel() for p in weights.values())
        assert sum(int((p == 0).sum()) for p in weights.values()) == round(fraction * total)
    else:
        for p in weights.values():
            assert int((p == 0).sum()) == round(fraction * p.numel())
    assert set(masks) == set(weights)
    out = _run("prune", _cnn())
    assert out.stats["pruned"] == round(0.5 * out.stats["total"])


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_quantize_levels(bits):
    model = _cnn()
    quantize(model, bits)
    for l in find_lockable(model):
        assert torch.unique(l.param.detach()).numel() <= 2**bits
    model = _cnn()
    quantize(model, bits, per_channel=True)
    for l in find_lockable(model):
        for row in l.param.detach().flatten(1):
            assert torch.unique(row).numel() <= 2**bits
    out = _run("quantize", _cnn(), bits=bits)
    assert all(v["levels"] <= 2**bits for v in out.stats["quantization"]["layers"].values())


def test_weight_decay_pull_and_sublevel_radius():
    model = _cnn()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    weight_decay_pull(model, 0.25)
    for n, p in model.named_parameters():
        expected = before[n] * 0.25 if p.dim() >= 2 else before[n]
        torch.testing.assert_close(p.detach(), expected)
    out = _run("weight-decay-pull", _cnn())
    assert out.stats["sq_norm_after"] == pytest.approx(0.25 * out.stats["sq_norm_before"], rel=1e-5)

    g = torch.Generator().manual_seed(0)  # random quadratic L(t) = ||A t - y||^2 >= 0
    A, y = torch.randn(20, 10, generator=g, dtype=torch.float64), torch.randn(20, generator=g, dtype=torch.float64)
    lam = 0.3
    scales = torch.logspace(-2, 2, 500, dtype=torch.float64)[:, None]
    thetas = torch.randn(500, 10, generator=g, dtype=torch.float64) * scales
    objective = ((thetas @ A.T - y) ** 2).sum(1) + lam * (thetas**2).sum(1)
    for C in (1.0, 10.0, 100.0, float(objective.median())):
        inside = objective <= C
        norms = thetas[inside].norm(dim=1)
        assert (norms <= sublevel_radius(C, lam) + 1e-12).all()
    # minimizer of L + lam ||t||^2 (ridge) lies in the ball of its own objective value
    t = torch.linalg.solve(A.T @ A + lam * torch.eye(10, dtype=torch.float64), A.T @ y)
    C = float(((A @ t - y) ** 2).sum() + lam * (t**2).sum())
    assert float(t.norm()) <= sublevel_radius(C, lam)
    assert sublevel_radius(4.0, 1.0) == pytest.approx(2.0) and math.isclose(sublevel_radius(0.0, 2.0), 0.0)
