"""Scion / Clipped Scion against float64 references of Pethick et al. (eqs. 1.2, 4.3-4.9) and their properties."""
from __future__ import annotations

import math

import pytest
import torch

from optim import ClippedScion, LMOSpec, Scion, dual_norm, layer_norm, newton_schulz5

# (shape, norm, radius) per layer: one of each LMO
LAYERS = [((6, 10), "sign", 30.0), ((8, 6), "colnorm", 2.0), ((6, 8), "rownorm", 3.0), ((7,), "bias_rms", 0.5),
          ((8, 12), "spectral", 5.0)]
EXACT = [layer for layer in LAYERS if layer[1] != "spectral"]


def ref_lmo(d: torch.Tensor, norm: str) -> torch.Tensor:
    """Scion Tables 2-4 (float64), pointing against d."""
    if norm == "sign":
        return -torch.sign(d) / d.shape[1]
    if norm == "colnorm":
        return -math.sqrt(d.shape[0]) * d / d.norm(dim=0, keepdim=True)
    if norm == "rownorm":
        return -d / (math.sqrt(d.shape[1]) * d.norm(dim=1, keepdim=True))
    if norm == "bias_rms":
        return -d / (d.norm() / math.sqrt(d.numel()))
    return -math.sqrt(d.shape[0] / d.shape[1]) * newton_schulz5(d.float(), 5, torch.float32).double()


def make(layers, seed=0, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(scale * torch.randn(shape, generator=g)) for shape, _, _ in layers]
    groups = [{"params": [p], "norm": norm, "radius": radius} for p, (_, norm, radius) in zip(params, layers)]
    return params, groups


def set_grads(params, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = scale * torch.randn(p.shape, generator=g, dtype=p.dtype)


def reference_run(layers, x0, grads_per_step, lr, rho, alpha, constrained):
    """Algorithm 3 (unconstrained) / Algorithm 4 Variant 2 (constrained) with lr = gamma*rho; rho None = Scion."""
    xs = [x.double().clone() for x in x0]
    ds = [torch.zeros_like(x) for x in xs]
    for grads in grads_per_step:
        ds = [(1 - alpha) * d + alpha * g.double() for d, g in zip(ds, grads)]
        ss = [ref_lmo(d, norm) for d, (_, norm, _) in zip(ds, layers)]
        rs = [r for _, _, r in layers]
        if constrained:
            G = sum((d * (x - r * s)).sum() for d, x, s, r in zip(ds, xs, ss, rs))
        else:
            G = -sum(r * (d * s).sum() for d, s, r in zip(ds, ss, rs))
        eta = 1.0 if rho is None else min(1.0, G.item() / rho)  # the reference code: no clamp at 0
        if constrained:
            xs = [(1 - lr * eta) * x + lr * eta * r * s for x, s, r in zip(xs, ss, rs)]
        else:
            xs = [x + lr * eta * r * s for x, s, r in zip(xs, ss, rs)]
    return xs


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("rho", [None, 5.0, 1e4])
def test_matches_the_paper_algorithm(constrained, rho):
    params, groups = make(LAYERS)
    x0 = [p.detach().clone() for p in params]
    opt = ClippedScion(groups, lr=0.01, rho=rho, alpha=0.3, constrained=constrained, ns_dtype="float32")
    grads_per_step = []
    for step in range(3):
        set_grads(params, seed=step)
        grads_per_step.append([p.grad.clone() for p in params])
        opt.step()
    expected = reference_run(LAYERS, x0, grads_per_step, 0.01, rho, 0.3, constrained)
    for p, e in zip(params, expected):
        assert torch.allclose(p.double(), e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("constrained", [False, True])
def test_rho_to_zero_is_scion_exactly(constrained):
    a, groups_a = make(LAYERS)
    b, groups_b = make(LAYERS)
    opt_a = ClippedScion(groups_a, lr=0.02, rho=1e-30, constrained=constrained)
    opt_b = Scion(groups_b, lr=0.02, constrained=constrained)
    for step in range(3):
        set_grads(a, step)
        set_grads(b, step)
        opt_a.step()
        opt_b.step()
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("rho", [1.0, 50.0, 1e5])
def test_layerwise_step_norm_is_lr_times_clip_factor(rho):
    """Unconstrained: ||x_l' - x_l||_l = lr * min(1, G/rho) * r_l; exact for sign/col/row/bias, NS band for spectral."""
    params, groups = make(LAYERS)
    x0 = [p.detach().clone() for p in params]
    set_grads(params, 7)
    ds = [p.grad.double() for p in params]
    lr = 0.01
    opt = ClippedScion(groups, lr=lr, rho=rho, alpha=1.0, ns_dtype="float32")
    opt.step()
    # G from the same LMO outputs as the update (Newton-Schulz for spectral, no SVD), as in the paper's code
    G = -sum(r * (d * ref_lmo(d, norm)).sum() for d, (_, norm, r) in zip(ds, LAYERS))
    eta = min(1.0, G.item() / rho)
    for p, x, (_, norm, r) in zip(params, x0, LAYERS):
        ratio = layer_norm((p.detach() - x).double(), LMOSpec(norm)).item() / (lr * eta * r)
        if norm == "spectral":
            assert 0.6 < ratio < 1.25
        else:
            assert ratio == pytest.approx(1.0, rel=1e-4)
    assert opt.stats()["dual_norm"].item() == pytest.approx(G.item(), rel=1e-5)
    assert opt.stats()["clip_factor"].item() == pytest.approx(eta, rel=1e-5)


def test_reported_dual_norm_is_exact_for_exact_lmos():
    params, groups = make(EXACT)
    set_grads(params, 3)
    G = sum(r * dual_norm(p.grad.double(), LMOSpec(norm)) for p, (_, norm, r) in zip(params, EXACT))
    opt = ClippedScion(groups, lr=0.01, rho=10.0, alpha=1.0)
    opt.step()
    assert opt.stats()["dual_norm"].item() == pytest.approx(G.item(), rel=1e-5)


def test_constrained_iterates_stay_in_the_ball():
    params, groups = make(EXACT, scale=0.0)
    opt = ClippedScion(groups, lr=0.3, rho=1.0, alpha=0.5, constrained=True)
    for step in range(25):
        set_grads(params, step, scale=10.0 ** (step % 5 - 2))
        opt.step()
        for p, (_, norm, r) in zip(params, EXACT):
            assert layer_norm(p.detach().double(), LMOSpec(norm)).item() <= r * (1 + 1e-5)
        assert opt.stats()["dual_norm"].item() >= 0  # Frank-Wolfe gap


def test_first_average_is_alpha_times_gradient():
    params, groups = make(LAYERS)
    set_grads(params, 0)
    grads = [p.grad.clone() for p in params]
    opt = Scion(groups, lr=0.01, alpha=0.25)
    opt.step()
    for p, g in zip(params, grads):
        assert torch.allclose(opt.state[p]["momentum_buffer"], 0.25 * g)


def test_clipping_regimes_scale_as_stated():
    """S < rho: the update is linear in d; S >= rho: invariant to d -> c d for c >= 1 (Pethick et al. 2025, sec. 5)."""
    def update(scale, rho):
        params, groups = make(EXACT, scale=0.0)  # x_0 = 0, so x_1 is the update itself
        set_grads(params, 11, scale)
        ClippedScion(groups, lr=0.01, rho=rho, alpha=1.0).step()
        return torch.cat([p.detach().reshape(-1) for p in params]).double()
    assert torch.allclose(update(3.0, 1e6), 3.0 * update(1.0, 1e6), rtol=1e-4, atol=1e-9)
    assert torch.allclose(update(3.0, 1e-3), update(1.0, 1e-3), rtol=1e-5, atol=1e-9)


def test_constrained_scion_is_the_reference_code_update():
    """LIONS-EPFL/scion: p = (1 - lr) p - lr * r * LMO+(d) with LMO+ = -lmo."""
    params, groups = make(EXACT)
    x0 = [p.detach().clone() for p in params]
    set_grads(params, 5)
    Scion(groups, lr=0.1, alpha=1.0, constrained=True).step()
    for p, x, (_, norm, r) in zip(params, x0, EXACT):
        expected = (1 - 0.1) * x.double() + 0.1 * r * ref_lmo(p.grad.double(), norm)
        assert torch.allclose(p.double(), expected, rtol=1e-5, atol=1e-6)


def test_bad_group_settings_are_named():
    p = torch.nn.Parameter(torch.randn(3, 3))
    with pytest.raises(ValueError, match="norm must be one of"):
        Scion([{"params": [p], "norm": "frobenius"}], lr=0.1)
    with pytest.raises(ValueError, match="radius"):
        Scion([{"params": [p], "radius": -1.0}], lr=0.1)
    with pytest.raises(ValueError, match="rho"):
        ClippedScion([p], lr=0.1, rho=0.0)


def sign_layer_outside_the_ball(scale=5.0):
    """One sign-norm layer (radius 1, lmo = -sign(d)/d_in) at x = -scale sign(g)/d_in: outside the ball, against d,
    so the Frank-Wolfe gap <d, x - lmo(d)> = -(scale - 1) ||d||_1 / d_in is negative."""
    g = torch.Generator().manual_seed(4)
    grad = torch.randn(3, 5, generator=g, dtype=torch.float64)
    p = torch.nn.Parameter(-scale * torch.sign(grad) / 5)
    return p, grad


@pytest.mark.parametrize("clamp_gap", [False, True])
def test_negative_gap_takes_the_reference_eta_below_zero_step(clamp_gap):
    """The reference code's eta = min(1, G/rho) < 0 for a negative gap: x - lr eta v still lowers the linear model
    <d, x> (by lr G^2/rho); clamp_gap=True freezes the step instead."""
    p, grad = sign_layer_outside_the_ball()
    x0 = p.detach().clone()
    lr, rho = 0.1, 50.0
    opt = ClippedScion([{"params": [p], "norm": "sign", "radius": 1.0}], lr=lr, rho=rho, alpha=1.0,
                       constrained=True, clamp_gap=clamp_gap)
    p.grad = grad.clone()
    opt.step()
    G = (grad * (x0 + torch.sign(grad) / 5)).sum()
    assert G.item() == pytest.approx(-4 * grad.abs().sum().item() / 5, rel=1e-12)
    assert opt.stats()["dual_norm"].item() == pytest.approx(G.item(), rel=1e-12)
    if clamp_gap:
        assert torch.equal(p.detach(), x0)
        assert opt.stats()["clip_factor"].item() == 0.0
        return
    eta = G.item() / rho
    v = x0 + torch.sign(grad) / 5
    torch.testing.assert_close(p.detach(), x0 - lr * eta * v, rtol=1e-12, atol=1e-14)
    assert (grad * (p.detach() - x0)).sum().item() == pytest.approx(-lr * G.item() ** 2 / rho, rel=1e-10)


@pytest.mark.parametrize("spectral_lmo", ["svd", "newton_schulz"])
def test_s3cg_variant1_short_step(spectral_lmo):
    """Variant 1 (eq. 4.8a) in code units: eta = min(1, 4 G / (rho ||v||^2)), ||v|| = max_l ||x_l - r_l lmo_l||_l/r_l
    (the product norm, eq. 4.1); inside the ball ||v|| <= 2, so it steps at least as far as Variant 2."""
    layers = [((6, 10), "sign", 30.0), ((7,), "bias_rms", 0.5), ((8, 12), "spectral", 5.0)]
    params, groups = make(layers)
    params = [torch.nn.Parameter(p.detach().double()) for p in params]
    for group, p in zip(groups, params):
        group["params"] = [p]
    x0 = [p.detach().clone() for p in params]
    rho, lr = 1e4, 0.05
    opt = ClippedScion(groups, lr=lr, rho=rho, alpha=1.0, constrained=True, variant=1, spectral_lmo=spectral_lmo,
                       ns_dtype=torch.float64)
    set_grads(params, 2)
    ds = [p.grad.double().clone() for p in params]
    opt.step()
    if spectral_lmo == "svd":
        ss = [ref_lmo(d, norm) if norm != "spectral" else
              -math.sqrt(d.shape[0] / d.shape[1]) * (lambda U, S, Vh: U @ Vh)(*torch.linalg.svd(d, full_matrices=False))
              for d, (_, norm, _) in zip(ds, layers)]
    else:
        ss = [ref_lmo(d, norm) if norm != "spectral" else
              -math.sqrt(d.shape[0] / d.shape[1]) * newton_schulz5(d, 5, torch.float64) for d, (_, norm, _) in
              zip(ds, layers)]
    vs = [x - r * s for x, s, (_, _, r) in zip(x0, ss, layers)]
    G = sum((d * v).sum() for d, v in zip(ds, vs)).item()
    v_norm = max(layer_norm(v, LMOSpec(norm)).item() / r for v, (_, norm, r) in zip(vs, layers))
    eta = min(1.0, 4 * G / (rho * v_norm ** 2))
    assert v_norm <= 2.0 + 1e-9 and eta >= min(1.0, G / rho)
    assert opt.stats()["clip_factor"].item() == pytest.approx(eta, rel=1e-8)  # the estimate is the SVD's here too
    assert eta < 1.0  # the test exercises the short step, not the cap
    for p, x, v in zip(params, x0, vs):
        # the LMOs' 1e-8 guard against a zero norm limits the agreement to ~1e-8
        torch.testing.assert_close(p.detach(), x - lr * opt.stats()["clip_factor"].item() * v, rtol=1e-7, atol=1e-9)
