"""LMOs and Newton-Schulz: unit-ball and dual-norm identities (float64), the quintic's singular-value band."""
from __future__ import annotations

import math

import pytest
import torch

from optim import LMOSpec, dual_norm, layer_norm, lmo, lmo_many, newton_schulz5, orthogonalize

EXACT_SPECS = [LMOSpec("sign"), LMOSpec("sign", normalized=False), LMOSpec("colnorm"),
               LMOSpec("colnorm", normalized=True), LMOSpec("colnorm", transpose=True), LMOSpec("rownorm"),
               LMOSpec("rownorm", normalized=False), LMOSpec("rownorm", transpose=True), LMOSpec("bias_rms")]


def _exact_uv(d: torch.Tensor) -> torch.Tensor:
    U, _, Vh = torch.linalg.svd(d, full_matrices=False)
    return U @ Vh


@pytest.mark.parametrize("spec", EXACT_SPECS, ids=lambda s: f"{s.norm}-{s.normalized}-{s.transpose}")
def test_lmo_lies_on_the_unit_sphere_and_attains_the_dual_norm(spec):
    torch.manual_seed(0)
    d = torch.randn(12) if spec.norm == "bias_rms" else torch.randn(6, 10, dtype=torch.float64)
    d = d.double()
    s = lmo(d, spec)
    assert layer_norm(s, spec).item() == pytest.approx(1.0, rel=1e-6)
    assert -(d * s).sum().item() == pytest.approx(dual_norm(d, spec).item(), rel=1e-6)
    # lmo minimizes <d, s> over the ball: beats random points of the unit ball
    for _ in range(20):
        r = torch.randn_like(d)
        r = r / layer_norm(r, spec)
        assert (d * s).sum() <= (d * r).sum() + 1e-9


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("normalized", [True, False])
def test_spectral_lmo_with_exact_orthogonalization(transpose, normalized):
    torch.manual_seed(1)
    d = torch.randn(8, 20, dtype=torch.float64)
    spec = LMOSpec("spectral", normalized=normalized, transpose=transpose)
    s = lmo(d, spec, orthogonalized=_exact_uv(d))
    assert layer_norm(s, spec).item() == pytest.approx(1.0, rel=1e-9)
    assert -(d * s).sum().item() == pytest.approx(dual_norm(d, spec).item(), rel=1e-9)
    d_out, d_in = (20, 8) if transpose else (8, 20)
    expected = math.sqrt(d_out / d_in) if normalized else math.sqrt(d_out)
    assert torch.allclose(s, -expected * _exact_uv(d))


def test_sign_lmo_matches_the_scion_nanogpt_head_scaling():
    d = torch.randn(50, 16)
    assert torch.equal(lmo(d, LMOSpec("sign")), -torch.sign(d) / 16)


def test_vector_in_a_matrix_norm_is_a_clear_error():
    with pytest.raises(ValueError, match="2-D"):
        lmo(torch.randn(5), LMOSpec("sign"))
    with pytest.raises(ValueError, match="unknown norm"):
        LMOSpec("frobenius")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(32, 64), (64, 32), (24, 96)])
def test_newton_schulz_singular_values_stay_in_the_quintic_band(shape, dtype):
    torch.manual_seed(2)
    G = torch.randn(6, *shape)
    sv = torch.linalg.svdvals(newton_schulz5(G, 5, dtype).double())
    assert sv.min() > 0.62 and sv.max() < 1.22, (sv.min().item(), sv.max().item())


def test_newton_schulz_keeps_singular_vectors_and_never_exceeds_the_band():
    torch.manual_seed(3)
    G = torch.randn(40, 40, dtype=torch.float64)  # square: small singular values do not converge, the band's top holds
    O = newton_schulz5(G, 5, torch.float64)
    U, S, Vh = torch.linalg.svd(G)
    f = torch.diagonal(U.T @ O @ Vh.T)  # O = U f(S) V^T
    assert torch.allclose(U @ torch.diag(f) @ Vh, O, atol=1e-8)
    assert f.max() < 1.22 and (f > 0).all()
    big = S / torch.linalg.norm(G) > 0.05
    assert f[big].min() > 0.62


def test_orthogonalize_batches_by_shape_and_keeps_order():
    torch.manual_seed(4)
    mats = [torch.randn(8, 16), torch.randn(16, 8), torch.randn(8, 16), torch.zeros(4, 4)]
    out = orthogonalize(mats, steps=5, dtype=torch.float32)
    for m, o in zip(mats, out):
        assert o.shape == m.shape
        assert torch.allclose(o, newton_schulz5(m, 5, torch.float32), atol=1e-6)
    assert torch.equal(out[3], torch.zeros(4, 4))


def test_exact_svd_orthogonalizer_and_power_iteration():
    from optim.lmo import spectral_norm_estimate
    from optim.newton_schulz import svd_orthogonalize

    g = torch.Generator().manual_seed(0)
    G = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    O = svd_orthogonalize(G)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    torch.testing.assert_close(O, U @ Vh, rtol=1e-12, atol=1e-12)
    assert torch.equal(svd_orthogonalize(torch.zeros(4, 3)), torch.zeros(4, 3))  # lmo(0) = 0, as Newton-Schulz
    M = torch.randn(20, 12, generator=g, dtype=torch.float64)
    exact = torch.linalg.matrix_norm(M, ord=2).item()
    estimate = spectral_norm_estimate(M).item()
    assert estimate <= exact * (1 + 1e-12) and estimate == pytest.approx(exact, rel=1e-12)


def _flat_topped(m: int, n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """An S3CG Variant 1 direction v = x - r lmo(d) as the optimizer meets it: x inside the spectral ball (a scaled
    orthogonal matrix plus noise), lmo by bf16 Newton-Schulz. Its top singular values crowd together."""
    g = torch.Generator().manual_seed(seed)
    r, s = 50.0, math.sqrt(m / n)
    W = torch.empty(m, n, dtype=torch.float64)
    torch.nn.init.orthogonal_(W, generator=g)
    x = 0.7 * r * s * W + 0.01 * torch.randn(m, n, generator=g, dtype=torch.float64)
    d = torch.randn(m, n, generator=g, dtype=torch.float64)
    return (x + r * s * newton_schulz5(d, 5, torch.bfloat16)).to(dtype)


def _power_iteration_20(M: torch.Tensor) -> torch.Tensor:
    """The estimate Variant 1 used before: 20 power iterations on M^T M from the all-ones vector."""
    u = torch.ones(M.size(1), dtype=M.dtype)
    for _ in range(20):
        u = M.mT @ (M @ u)
        u = u / u.norm()
    return (M @ u).norm()


@pytest.mark.parametrize("shape", [(256, 256), (96, 384), (384, 96)])
def test_spectral_norm_estimate_matches_the_svd_on_flat_topped_spectra(shape):
    from optim.lmo import spectral_norm_estimate

    v = _flat_topped(*shape, seed=sum(shape))
    exact = torch.linalg.matrix_norm(v, ord=2)
    assert 1 - _power_iteration_20(v) / exact > 3e-3  # the old estimate: 0.5-2% low on these
    assert abs(spectral_norm_estimate(v) / exact - 1) <= 1e-12  # float64 math
    assert abs(spectral_norm_estimate(v.float()).double() / exact - 1) <= 1e-5  # fp32 math
    batch = torch.stack([v, 2 * v, v.flip(-1) / 3])  # batched: one estimate per matrix
    assert torch.allclose(spectral_norm_estimate(batch), torch.stack([exact, 2 * exact, exact / 3]), rtol=1e-12)


def test_spectral_norm_estimate_of_degenerate_matrices():
    from optim.lmo import layer_norms, spectral_norm_estimate

    assert spectral_norm_estimate(torch.zeros(5, 3)).item() == 0.0  # v = 0: the factor's 0 branch, not NaN
    Q = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))[0]
    assert spectral_norm_estimate(3 * Q).item() == pytest.approx(3.0, rel=1e-12)  # all singular values equal
    e = torch.zeros(4, 7, dtype=torch.float64)
    e[2, 5] = -2.5  # rank one, top singular vectors orthogonal to the all-ones start of plain power iteration
    e[0, 0], e[0, 1] = 1.0, -1.0
    assert spectral_norm_estimate(e).item() == pytest.approx(2.5, rel=1e-12)
    big = torch.randn(8, 5, dtype=torch.float64) * 1e200  # normalized first: no overflow in the squarings
    assert spectral_norm_estimate(big).item() == pytest.approx(torch.linalg.matrix_norm(big, ord=2).item(), rel=1e-12)
    ws = [torch.randn(8, 12, dtype=torch.float64), torch.randn(12, 8, dtype=torch.float64), torch.randn(5)]
    specs = [LMOSpec("spectral"), LMOSpec("spectral", transpose=True), LMOSpec("bias_rms")]
    for est, w, spec in zip(layer_norms(ws, specs, exact=False), ws, specs):
        assert est.item() == pytest.approx(layer_norm(w, spec).item(), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lmo_many_is_bitwise_lmo_of_each_tensor(dtype):
    """lmo_many runs the elementwise LMOs as foreach ops over all tensors of a norm (and the spectral ones batched by
    shape): every result is bit for bit what lmo() gives that tensor alone, for every norm, scaling and orientation,
    into caller buffers (non-contiguous pieces too) or new tensors."""
    torch.manual_seed(3)
    specs = [LMOSpec("spectral"), LMOSpec("spectral"), LMOSpec("spectral", normalized=False, transpose=True),
             LMOSpec("spectral", transpose=True), *EXACT_SPECS, LMOSpec("sign", transpose=True), LMOSpec("bias_rms")]
    shapes = [(6, 10), (6, 10), (10, 6), (7, 5)] + [(5,) if s.norm == "bias_rms" else (6, 9) for s in EXACT_SPECS] \
        + [(9, 6), (11,)]
    ds = [torch.randn(shape, dtype=dtype) for shape in shapes]
    ds[-1].zero_()  # a zero vector: -0 / eps
    expected = [lmo(d, s, ns_dtype=dtype) for d, s in zip(ds, specs)]
    wide = torch.empty(6, 20, dtype=dtype)
    outs = [torch.empty_like(d) for d in ds]
    outs[0] = wide[:, :10]  # a non-contiguous piece of a buffer, as a split parameter's
    for got in (lmo_many(ds, specs, ns_dtype=dtype, out=outs), lmo_many(ds, specs, ns_dtype=dtype)):
        for i, (g, e) in enumerate(zip(got, expected)):
            assert g.dtype == e.dtype and g.shape == e.shape, i
            bits = torch.int64 if dtype == torch.float64 else torch.int32
            assert torch.equal(g.contiguous().view(bits), e.view(bits)), (i, specs[i])
    assert got is not outs and lmo_many(ds, specs, ns_dtype=dtype, out=outs)[0].data_ptr() == wide.data_ptr()
