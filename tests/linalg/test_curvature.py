import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import trainlock as tl
from trainlock.linalg.curvature import (
    ConvergenceWarning,
    LanczosOptions,
    condition_estimate,
    dense_hessian,
    hessian_eigenvalues,
    hessian_spectrum,
    hvp,
    lanczos,
)


def ce_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = tl.models.build("mlp", input_shape=[4], num_classes=3, hidden=[6], activation="tanh").double()
    x = torch.randn(32, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (32,))
    return model, (x, y)


class Quadratic(nn.Module):
    """loss = 0.5 * sum(d * w^2): Hessian diag(d)."""

    def __init__(self, d):
        super().__init__()
        self.d = d
        self.w = nn.Parameter(torch.randn(len(d), dtype=torch.float64))


def quad_loss(model, batch):
    return 0.5 * (model.d * model.w**2).sum()


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_lanczos_matches_dense_hessian(tiny, which):
    model, batch = tiny
    H = dense_hessian(model, ce_loss, batch)
    assert torch.allclose(H, H.T, atol=1e-10)
    ref = torch.linalg.eigvalsh(H)
    ref = ref.flip(0)[:2] if which == "largest" else ref[:2]
    got = hessian_eigenvalues(model, ce_loss, batch, k=2, which=which, tol=1e-10)
    assert torch.allclose(got, ref, rtol=1e-6, atol=0), (got, ref)
    res = hessian_spectrum(model, ce_loss, batch, k=2, which=which, options=LanczosOptions(tol=1e-8))
    assert bool(res.converged.all()) and res.iters <= H.shape[0]
    assert torch.allclose(res.eigenvalues, ref, rtol=1e-6, atol=0)


def test_relu_mlp_largest_matches_dense():
    torch.manual_seed(1)
    model = tl.models.build("mlp", input_shape=[4], num_classes=3, hidden=[6]).double()
    batch = (torch.randn(64, 4, dtype=torch.float64), torch.randint(0, 3, (64,)))
    ref = torch.linalg.eigvalsh(dense_hessian(model, ce_loss, batch))
    got = hessian_eigenvalues(model, ce_loss, batch, k=2, which="largest")
    assert torch.allclose(got, ref.flip(0)[:2], rtol=1e-6, atol=0)


def test_lanczos_random_symmetric_matrix():
    g = torch.Generator().manual_seed(3)
    n = 300
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = (A + A.T) / 2
    ref = torch.linalg.eigvalsh(A)
    top = lanczos(lambda v: A @ v, n, k=3, options=LanczosOptions(iters=n, tol=1e-10))
    bot = lanczos(lambda v: A @ v, n, k=3, which="smallest", options=LanczosOptions(iters=n, tol=1e-10))
    assert torch.allclose(top.eigenvalues, ref.flip(0)[:3], rtol=1e-8)
    assert torch.allclose(bot.eigenvalues, ref[:3], rtol=1e-8)
    assert bool(top.converged.all()) and bool(bot.converged.all())
    assert (top.residuals <= 1e-10 * top.eigenvalues.abs()).all()


def _recorded(A, dtype):
    """A matvec in `dtype` (its rounding is what loses orthogonality) that keeps every vector it is given: the
    Lanczos basis."""
    seen = []

    def mv(v):
        seen.append(v.clone())
        return (A.to(dtype) @ v.to(dtype)).double()

    return mv, seen


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_partial_reorthogonalization_keeps_the_basis_semi_orthogonal(dtype):
    # eigenvalues 1/i^2 (a few large, a long tail near 0, like a Hessian's): converged Ritz vectors make plain
    # Lanczos lose orthogonality fast, so a full run must reorthogonalize some steps and may skip others
    g = torch.Generator().manual_seed(5)
    n = 400
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    d = 1.0 / torch.arange(1, n + 1, dtype=torch.float64) ** 2
    A = (U * d) @ U.T
    eps = torch.finfo(dtype).eps
    results = {}
    for reorth in ("partial", "full"):
        mv, seen = _recorded(A, dtype)
        opts = LanczosOptions(iters=120, tol=1e-300, reorth=reorth, eps=eps)
        results[reorth] = lanczos(mv, n, k=4, options=opts)
        Q = torch.stack(seen)
        loss = (Q @ Q.T - torch.eye(len(seen), dtype=torch.float64)).abs().max()
        assert loss <= (eps**0.5 if reorth == "partial" else 1e3 * torch.finfo(torch.float64).eps), loss
    part, full = results["partial"], results["full"]
    assert torch.allclose(part.eigenvalues, d[:4], rtol=1e3 * eps, atol=0), part.eigenvalues
    assert torch.allclose(part.eigenvalues, full.eigenvalues, rtol=1e3 * eps, atol=0)


def test_partial_reorthogonalization_skips_steps():
    # the same spectrum, counted: the partial run reorthogonalizes some of its steps, the full run every one, and
    # both find the same 8 eigenvalues to float64 accuracy
    g = torch.Generator().manual_seed(5)
    n = 400
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    d = 1.0 / torch.arange(1, n + 1, dtype=torch.float64) ** 2
    A = (U * d) @ U.T
    real = torch.Tensor.__matmul__
    passes, results = {}, {}
    for reorth in ("partial", "full"):
        calls = [0]

        def counting(a, b, calls=calls):
            calls[0] += a.dim() == 2 and a.shape[0] != n  # Q[:j+1] @ w: one per pass against the basis
            return real(a, b)

        torch.Tensor.__matmul__ = counting
        try:
            results[reorth] = lanczos(lambda v: A @ v, n, k=8, options=LanczosOptions(tol=1e-12, reorth=reorth))
        finally:
            torch.Tensor.__matmul__ = real
        passes[reorth] = calls[0]
    part, full = results["partial"], results["full"]
    assert part.iters == full.iters > 20
    assert passes["full"] >= full.iters and 0 < passes["partial"] < part.iters / 2, passes
    assert torch.allclose(part.eigenvalues, d[:8], rtol=1e-12, atol=0)


def test_lanczos_options_refuse_unknown_reorth():
    with pytest.raises(ValueError, match="reorth"):
        LanczosOptions(reorth="none")


def test_lanczos_small_operator_and_breakdown():
    # diag with a 2-dim invariant subspace from the start vector's view: still exact, no hang
    A = torch.diag(torch.tensor([3.0, 1.0, -2.0], dtype=torch.float64))
    r = lanczos(lambda v: A @ v, 3, k=3, options=LanczosOptions(tol=1e-12))
    assert torch.allclose(r.eigenvalues, torch.tensor([3.0, 1.0, -2.0], dtype=torch.float64))
    assert r.iters == 3 and bool(r.converged.all())


def test_chunked_hvp_equals_unchunked(tiny):
    model, batch = tiny
    v = [torch.randn_like(p) for p in model.parameters()]
    full = hvp(model, ce_loss, batch, v)
    for chunks in (2, 5):  # 5 does not divide 32: unequal chunks, weighted by size
        part = hvp(model, ce_loss, batch, v, chunks=chunks)
        for a, b in zip(full, part, strict=False):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    flat = torch.cat([t.reshape(-1) for t in v])
    for a, b in zip(full, hvp(model, ce_loss, batch, flat), strict=False):
        assert torch.allclose(a, b)
    e1 = hessian_eigenvalues(model, ce_loss, batch, k=1, chunks=3)
    e2 = hessian_eigenvalues(model, ce_loss, batch, k=1)
    assert torch.allclose(e1, e2, rtol=1e-8)


def test_hvp_matches_dense_columns(tiny):
    model, batch = tiny
    H = dense_hessian(model, ce_loss, batch)
    v = torch.randn(H.shape[0], dtype=torch.float64)
    hv = torch.cat([t.reshape(-1) for t in hvp(model, ce_loss, batch, v)])
    assert torch.allclose(hv, H @ v, atol=1e-12)


def test_non_convergence_warns_and_reports():
    d = torch.logspace(0, 4, 200, dtype=torch.float64)
    model = Quadratic(d)
    with pytest.warns(ConvergenceWarning, match="residuals"):
        res = hessian_spectrum(model, quad_loss, None, k=1, options=LanczosOptions(iters=2))
    assert res.iters == 2 and not bool(res.converged[0])
    assert float(res.residuals[0]) > 1e-6 * abs(float(res.eigenvalues[0]))
    with pytest.warns(ConvergenceWarning):
        val = hessian_eigenvalues(model, quad_loss, None, k=1, iters=2)
    assert val.shape == (1,) and float(val[0]) < float(d.max())


def test_no_differentiable_path_errors(tiny):
    model, batch = tiny
    with pytest.raises(ValueError, match="does not require grad"):
        hessian_eigenvalues(model, lambda m, b: ce_loss(m, b).detach(), batch)
    with pytest.raises(ValueError, match="does not require grad"):
        hvp(model, lambda m, b: torch.tensor(1.0), batch, [torch.zeros_like(p) for p in m_params(model)])
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        hessian_eigenvalues(model, ce_loss, batch)
    with pytest.raises(ValueError, match="no trainable parameters"):
        condition_estimate(model, ce_loss, batch)


def m_params(model):
    return list(model.parameters())


def test_zero_curvature_is_zero_not_error():
    model = Quadratic(torch.ones(3, dtype=torch.float64))
    v = [torch.ones(3, dtype=torch.float64)]
    out = hvp(model, lambda m, b: m.w.sum(), None, v)  # linear loss: H = 0
    assert torch.equal(out[0], torch.zeros(3, dtype=torch.float64))


def test_dense_hessian_size_limit():
    model = tl.models.build("mlp", input_shape=[100], num_classes=10, hidden=[64])
    batch = (torch.randn(2, 100), torch.randint(0, 10, (2,)))
    with pytest.raises(ValueError, match="max_params"):
        dense_hessian(model, ce_loss, batch)


def test_condition_estimate_diagonal_quadratic():
    d = torch.tensor([5.0, 3.0, 1.0, 0.5, -0.2, -2.0], dtype=torch.float64)
    est = condition_estimate(Quadratic(d), quad_loss, None, damping=1e-3)
    mu = 1e-3 * 5.0
    assert est["lambda_max"] == pytest.approx(5.0, rel=1e-9)
    assert est["lambda_min"] == pytest.approx(-2.0, rel=1e-9)
    assert est["ratio"] == pytest.approx(2.5, rel=1e-9)
    assert est["mu"] == pytest.approx(mu, rel=1e-9)
    assert est["damped"] == pytest.approx((5.0 + mu) / mu, rel=1e-6)
    assert est["converged_max"] and est["converged_min"]

    d = torch.tensor([4.0, 2.0, 0.5], dtype=torch.float64)  # convex: a true condition number
    est = condition_estimate(Quadratic(d), quad_loss, None, damping=1e-2)
    mu = 1e-2 * 4.0
    assert est["ratio"] == pytest.approx(8.0, rel=1e-9)
    assert est["damped"] == pytest.approx((4.0 + mu) / (0.5 + mu), rel=1e-9)


def test_lanczos_breakdown_restarts_and_keeps_multiplicity():
    # the Krylov space of diag(2,2,2,1,1) is 2-dim: Lanczos breaks down and restarts orthogonally
    A = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0, 1.0], dtype=torch.float64))
    r = lanczos(lambda v: A @ v, 5, k=3, options=LanczosOptions(tol=1e-12))
    # each Krylov block sees the eigenvalue 2 once: after one restart it is found twice, then 1
    # (single-vector Lanczos cannot promise full multiplicity); all values are exact eigenvalues
    assert torch.allclose(r.eigenvalues, torch.tensor([2.0, 2.0, 1.0], dtype=torch.float64))
    assert bool(r.converged.all()) and r.iters == 4
