"""Every registered optimizer trains a tiny model through fit(); specific checks for the red team's
optimizers (step modes, Muon's combined optimizer, K-FAC's hooks and maths, XMat's fit)."""

import gc
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import trainlock as tl
from trainlock.optimizers import OPTIMIZERS, make_optimizer, step_mode
from trainlock.train import LoopConfig, fit

# lr per optimizer for 30 steps of a tiny MLP on digits (batch 32); unknown names get 1e-2
LRS = {
    "sgd": 0.1,
    "sgd-nesterov": 0.1,
    "adam": 0.03,
    "adamw": 0.03,
    "adadelta": 1.0,
    "adagrad": 0.1,
    "rmsprop": 0.01,
    "lbfgs": 1.0,
    "muon": 0.1,
    "psgd-kron": 0.1,
    "soap": 0.1,
    "adahessian": 0.1,
    "sophia": 1.0,
    "xmat": 0.1,
    "kfac": 3e-3,
}
NEEDS = {
    "psgd-kron": "heavyball",
    "soap": "heavyball",  # optional packages (the redteam extra)
    "adahessian": "pytorch_optimizer",
    "sophia": "pytorch_optimizer",
}
HESSIAN = ["adahessian", "sophia", "xmat"]


@pytest.fixture(autouse=True)
def _quiet_create_graph_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
        yield


def _mlp(task):
    return tl.models.build("mlp", input_shape=task.input_shape, num_classes=10, hidden=[16])


def _cnn():
    return tl.models.build("cnn", input_shape=[1, 8, 8], num_classes=10, channels=[4], hidden=16)


def _train(name, model, task, steps=30):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    before = [p.detach().clone() for p in model.parameters()]
    cfg = LoopConfig(optimizer=name, lr=LRS.get(name, 1e-2), max_steps=steps, batch_size=32, device="cpu")
    res = fit(model, task, cfg, progress=False)
    assert res.stopped is None, res.stopped
    assert res.steps == steps and all(math.isfinite(v) for v in res.losses)
    first, last = sum(res.losses[:10]) / 10, sum(res.losses[-10:]) / 10
    assert last < first, f"{name}: loss {first:.3f} -> {last:.3f}"
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, model.parameters(), strict=False))
    return res


def test_red_team_optimizers_are_registered():
    expected = {
        "adagrad",
        "rmsprop",
        "sgd-nesterov",
        "lbfgs",
        "psgd-kron",
        "soap",
        "muon",
        "adahessian",
        "sophia",
        "xmat",
        "kfac",
    }
    assert expected <= set(OPTIMIZERS.names())


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_fit_lowers_the_loss(name, digits):
    _train(name, _mlp(digits), digits)


def test_kfac_trains_a_cnn(digits):
    _train("kfac", _cnn(), digits)


def test_step_modes():
    w = [nn.Parameter(torch.ones(2, 3))]
    modes = {}
    for name in OPTIMIZERS.names():
        if name in NEEDS:
            pytest.importorskip(NEEDS[name])
        model = nn.Linear(3, 2) if name == "kfac" else None
        params = list(model.parameters()) if model is not None else w
        modes[name] = step_mode(make_optimizer(name, params, lr=0.1, model=model))
    assert modes.pop("lbfgs") == "closure"
    for name in HESSIAN:
        assert modes.pop(name) == "hessian"
    assert set(modes.values()) == {"plain"}


@pytest.mark.parametrize("name", HESSIAN)
def test_hessian_optimizers_refuse_a_gradient_without_graph(name):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    w = nn.Parameter(torch.ones(3))
    opt = make_optimizer(name, [w], lr=0.1)
    (w**3).sum().backward()
    with pytest.raises(RuntimeError, match="create_graph=True"):
        opt.step()
    (w**3).sum().backward(create_graph=True)
    opt.step()
    assert w.grad.grad_fn is None  # detached after the step: no param -> grad -> graph cycle left
    assert not torch.equal(w.detach(), torch.ones(3))


def test_heavyball_compile_is_off_on_cpu():
    hb = pytest.importorskip("heavyball")
    make_optimizer("psgd-kron", [nn.Parameter(torch.ones(2, 2))], lr=0.1)
    assert hb.utils.compile_mode is None


def test_muon_splits_params_and_steplr_reaches_both():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LayerNorm(2 * 6 * 6), nn.Linear(2 * 6 * 6, 3))
    opt = make_optimizer("muon", model.parameters(), lr=0.1)
    muon, adamw = opt.inner
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    assert [p.shape for g in muon.param_groups for p in g["params"]] == [model[3].weight.shape]
    assert len([p for g in adamw.param_groups for p in g["params"]]) == 5  # conv w/b, norm w/b, linear b
    assert all(any(g is h for h in opt.param_groups) for o in opt.inner for g in o.param_groups)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    F.cross_entropy(model(torch.randn(4, 1, 8, 8)), torch.tensor([0, 1, 2, 0])).backward()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    sched.step()
    assert muon.param_groups[0]["lr"] == pytest.approx(0.05) and adamw.param_groups[0]["lr"] == pytest.approx(0.05)
    assert all(not torch.equal(b, p.detach()) for b, p in zip(before, model.parameters(), strict=False))
    state = opt.state_dict()
    opt.load_state_dict(state)  # the union is re-shared with the reloaded inner groups
    sched.step()
    assert [g["lr"] for o in opt.inner for g in o.param_groups] == pytest.approx([0.025, 0.025])


def test_muon_with_lr_decay_in_fit(digits):
    model = _mlp(digits)
    res = fit(
        model,
        digits,
        LoopConfig(optimizer="muon", lr=0.1, epochs=2, max_steps=60, lr_gamma=0.5, batch_size=32, device="cpu"),
        progress=False,
    )
    assert res.stopped is None and res.steps == 60


def test_kfac_needs_the_model():
    with pytest.raises(ValueError, match="model"):
        make_optimizer("kfac", [nn.Parameter(torch.ones(2, 2))], lr=0.1)


def _hook_count(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_kfac_hooks_are_removed_by_close_and_by_gc():
    model = _cnn()
    opt = make_optimizer("kfac", model.parameters(), lr=0.01, model=model)
    assert _hook_count(model) == 3  # conv, fc, head
    opt.close()
    assert _hook_count(model) == 0
    opt.close()  # idempotent
    opt = make_optimizer("kfac", model.parameters(), lr=0.01, model=model)
    assert _hook_count(model) == 3
    del opt
    gc.collect()
    assert _hook_count(model) == 0


@pytest.mark.parametrize("pi_damping", [False, True])
def test_kfac_preconditions_as_g_inverse_grad_a_inverse(pi_damping):
    torch.manual_seed(0)
    layer = nn.Linear(3, 2).double()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1])
    damping = 1e-2
    opt = make_optimizer(
        "kfac",
        layer.parameters(),
        lr=1.0,
        model=layer,
        momentum=0.0,
        damping=damping,
        inv_every=1,
        kl_clip=None,
        pi_damping=pi_damping,
    )
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    out = layer(x)
    loss = F.cross_entropy(out, y)
    gout = torch.autograd.grad(loss, out, retain_graph=True)[0]  # dL/d(output), rows = examples
    loss.backward()
    opt.step()
    # by hand: a = [x, 1], A = a^T a / B, G = B g^T g, damped inverses, G^-1 [dW | db] A^-1
    a = torch.cat([x, torch.ones(5, 1, dtype=x.dtype)], 1)
    A, G = a.T @ a / 5, 5 * gout.T @ gout
    pi = math.sqrt((A.trace() / 4 / (G.trace() / 2)).item()) if pi_damping else 1.0
    A_d = A + pi * math.sqrt(damping) * torch.eye(4, dtype=x.dtype)
    G_d = G + math.sqrt(damping) / pi * torch.eye(2, dtype=x.dtype)
    grad = torch.cat([layer.weight.grad, layer.bias.grad[:, None]], 1)
    expected = torch.linalg.solve(G_d, grad) @ torch.linalg.inv(A_d)
    assert torch.allclose(w0 - layer.weight.detach(), expected[:, :3], atol=1e-10)
    assert torch.allclose(b0 - layer.bias.detach(), expected[:, 3], atol=1e-10)
    assert not torch.allclose(expected, grad)  # the check is not vacuous


def test_xmat_products_match_dense_matrices():
    from trainlock.optimizers.xmat import _qtinv, _qtx, _qx

    for n in (5, 6):
        a, b = torch.randn(n, dtype=torch.float64) + 3, torch.randn(n, dtype=torch.float64)
        b[n // 2] = 0 if n % 2 else b[n // 2]
        Q = torch.diag(a) + torch.diag(b).flip(1)  # the X matrix
        x = torch.randn(n, dtype=torch.float64)
        assert torch.allclose(_qx(a, b, x), Q @ x)
        assert torch.allclose(_qtx(a, b, x), Q.T @ x)
        assert torch.allclose(_qtinv(a, b, x), torch.linalg.solve(Q.T, x))


def test_xmat_preconditioner_learns_the_inverse_hessian():
    n = 7  # quadratic 0.5 theta^T H theta whose Hessian is itself an X matrix: P should reach H^-1
    M = torch.diag(torch.rand(n) + 0.5) + torch.diag(torch.rand(n) * 0.3).flip(1)
    H = M.T @ M
    theta = nn.Parameter(torch.randn(n))
    opt = make_optimizer("xmat", [theta], lr=1e-9, damping=0.0)
    for i in range(600):
        if i == 400:
            opt.param_groups[0]["precond_lr"] = 0.02
        opt.zero_grad(set_to_none=True)
        (0.5 * theta @ H @ theta).backward(create_graph=True)
        opt.step()
    st = opt.state[theta]
    Q = torch.diag(st["a"]) + torch.diag(st["b"]).flip(1)
    assert (Q.T @ Q @ H - torch.eye(n)).abs().max() < 0.1
