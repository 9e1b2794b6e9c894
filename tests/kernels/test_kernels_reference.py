"""The torch reference path (the CPU path) against float64 math, torch.optim, and the edge cases of the contract."""
from __future__ import annotations

import math

import pytest
import torch

from optim.kernel_api import kernels
from kernels_float64_math import clip64, clipped_sgd64, inner64, norm64, scion_update64

SHAPES = [(7, 5), (0,), (13,), (3, 1, 4), (1,)]


def _tensors(dtype=torch.float32, seed=0, scale=1.0, shapes=SHAPES):
    gen = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(s, generator=gen)).to(dtype) for s in shapes]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_global_norm_matches_float64(dtype):
    ts = _tensors(dtype)
    n = kernels.global_norm(ts, backend="torch")
    assert n.dtype == torch.float32 and n.dim() == 0
    assert n.item() == pytest.approx(norm64(ts), rel=1e-6)


def test_global_norm_mixed_dtypes_and_empty():
    ts = _tensors(torch.float32) + _tensors(torch.bfloat16, seed=1)
    assert kernels.global_norm(ts, backend="torch").item() == pytest.approx(norm64(ts), rel=1e-6)
    empty = kernels.global_norm([], backend="torch")
    assert empty.item() == 0.0 and empty.dtype == torch.float32
    assert kernels.global_norm([torch.zeros(0)], backend="torch").item() == 0.0


@pytest.mark.parametrize("bad, expect", [(float("nan"), "nan"), (float("inf"), "inf"), (-float("inf"), "inf")])
def test_global_norm_non_finite(bad, expect):
    ts = _tensors()
    ts[2][4] = bad
    n = kernels.global_norm(ts, backend="torch").item()
    assert math.isnan(n) if expect == "nan" else n == math.inf


@pytest.mark.parametrize("rule", kernels.CLIP_RULES)
@pytest.mark.parametrize("n", [0.0, 0.3, 1.0, 7.5, 1e6, float("nan"), float("inf")])
def test_clip_factor_matches_float64(rule, n):
    kw = dict(gamma=2.0, delta=0.1, beta=0.5)
    got = kernels.clip_factor(torch.tensor(n), rule, **kw).item()
    want = clip64(n, rule, **kw)
    assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-6)


def test_dgclip_factor_lies_in_delta_one():
    """δ-GClip: the effective step size lies in [lr·δ, lr] (Tucat et al. 2025, Def. 2)."""
    norms = torch.logspace(-3, 6, 50)
    cs = torch.stack([kernels.clip_factor(n, "dgclip", gamma=1.0, delta=0.05) for n in norms])
    assert bool((cs >= 0.05).all()) and bool((cs <= 1.0).all())


def test_clip_factor_bad_arguments():
    n = torch.tensor(1.0)
    with pytest.raises(ValueError, match="clip rule must be one of"):
        kernels.clip_factor(n, "clip")
    with pytest.raises(ValueError, match="gamma"):
        kernels.clip_factor(n, "gclip")
    with pytest.raises(ValueError, match="delta"):
        kernels.clip_factor(n, "dgclip", gamma=1.0, delta=2.0)


UPDATE_CASES = [
    dict(rule="gclip", gamma=0.5, momentum=0.0),
    dict(rule="gclip", gamma=0.5, momentum=0.9, weight_decay=0.1),
    dict(rule="dgclip", gamma=0.5, delta=0.3, momentum=0.9, nesterov=True, weight_decay=0.1),
    dict(rule="dgclip", gamma=0.5, delta=0.3, momentum=0.9, weight_decay=0.1, weight_decay_mode="coupled"),
    dict(rule="normalized", beta=0.2, momentum=0.5, nesterov=True, weight_decay=0.01, weight_decay_mode="coupled"),
    dict(rule="none", momentum=0.0, weight_decay=0.05),
]


@pytest.mark.parametrize("case", UPDATE_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_clipped_sgd_update_matches_float64(case, dtype):
    params, grads = _tensors(dtype, 0), _tensors(dtype, 1)
    momenta = _tensors(torch.float32, 2) if case["momentum"] > 0 else None
    norm = kernels.global_norm(grads, backend="torch")
    expect = [clipped_sgd64(p, g, momenta[i] if momenta else None, norm64(grads), lr=0.1, **case)
              for i, (p, g) in enumerate(zip(params, grads))]
    kernels.clipped_sgd_update_(params, grads, momenta, norm, lr=0.1, backend="torch", **case)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=8e-3, atol=8e-3)
    for i, (p_new, m_new) in enumerate(expect):
        torch.testing.assert_close(params[i].double(), p_new.to(dtype).double(), **tol)
        if momenta is not None:
            torch.testing.assert_close(momenta[i].double(), m_new, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_gclip_update_equals_torch_clip_grad_norm_and_sgd(nesterov):
    """Contract: rule gclip = torch clip_grad_norm_ + SGD (dampening 0), here over three steps with momentum."""
    ours = [torch.nn.Parameter(t) for t in _tensors(seed=3)]
    theirs = [torch.nn.Parameter(t.clone()) for t in ours]
    momenta = [torch.zeros_like(p) for p in ours]
    sgd = torch.optim.SGD(theirs, lr=0.05, momentum=0.9, nesterov=nesterov)
    for step in range(3):
        grads = _tensors(seed=10 + step, scale=3.0)
        for p, g in zip(theirs, grads):
            p.grad = g.clone()
        torch.nn.utils.clip_grad_norm_(theirs, max_norm=1.5, foreach=True)
        sgd.step()
        with torch.no_grad():
            kernels.clipped_sgd_update_(ours, grads, momenta, kernels.global_norm(grads), lr=0.05, rule="gclip",
                                        gamma=1.5, momentum=0.9, nesterov=nesterov, backend="torch")
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)


def test_gclip_step_never_longer_than_lr_gamma():
    """GClip without momentum moves the parameters by at most lr·γ (Tucat et al. 2025, Def. 1)."""
    params, grads = _tensors(seed=4), _tensors(seed=5, scale=100.0)
    before = [p.clone() for p in params]
    kernels.clipped_sgd_update_(params, grads, None, kernels.global_norm(grads), lr=0.1, rule="gclip", gamma=2.0)
    moved = norm64([a - b for a, b in zip(params, before)])
    assert moved <= 0.1 * 2.0 * (1 + 1e-5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("rule", kernels.CLIP_RULES)
def test_non_finite_norm_writes_nothing(bad, rule):
    params, grads, momenta = _tensors(seed=0), _tensors(seed=1), _tensors(seed=2)
    grads[0][0, 0] = bad
    before = [t.clone() for t in params + momenta]
    kernels.clipped_sgd_update_(params, grads, momenta, kernels.global_norm(grads), lr=0.1, rule=rule, gamma=1.0,
                                momentum=0.9, weight_decay=0.1, backend="torch")
    for a, b in zip(params + momenta, before):
        assert torch.equal(a, b)


def test_update_bad_arguments():
    p, g = _tensors(), _tensors(seed=1)
    n = kernels.global_norm(g)
    with pytest.raises(ValueError, match="momenta"):
        kernels.clipped_sgd_update_(p, g, None, n, lr=0.1, rule="none", momentum=0.9)
    with pytest.raises(ValueError, match=r"grads\[1\] has shape"):
        kernels.clipped_sgd_update_(p, g[:1] + g[2:3] + g[2:], None, n, lr=0.1, rule="none")
    with pytest.raises(TypeError, match="lr must be a Python float"):  # a 1-element tensor lr is allowed
        kernels.clipped_sgd_update_(p, g, None, n, lr=torch.tensor([0.1, 0.2]), rule="none")
    with pytest.raises(ValueError, match="weight_decay_mode"):
        kernels.clipped_sgd_update_(p, g, None, n, lr=0.1, rule="none", weight_decay_mode="l2")
    with pytest.raises(ValueError, match="backend must be one of"):
        kernels.global_norm(g, backend="cuda")
    with pytest.raises(TypeError, match="list of tensors"):
        kernels.global_norm(g[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lerp_momentum_matches_float64(dtype):
    ds, grads = _tensors(dtype, 0), _tensors(dtype, 1)
    expect = [0.7 * d.double() + 0.3 * g.double() for d, g in zip(ds, grads)]
    kernels.lerp_momentum_(ds, grads, 0.3, backend="torch")
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=8e-3, atol=8e-3)
    for d, e in zip(ds, expect):
        torch.testing.assert_close(d.double(), e.to(dtype).double(), **tol)


@pytest.mark.parametrize("guard", [1.0, float("nan")])
def test_lerp_momentum_guard_writes_nothing_when_non_finite(guard):
    ds, grads = _tensors(seed=0), _tensors(seed=1)
    grads[0][0, 0] = float("inf")  # what a poisoned step looks like
    before = [d.clone() for d in ds]
    kernels.lerp_momentum_(ds, grads, 0.3, backend="torch", skip_if_nonfinite=torch.tensor(guard))
    changed = [not torch.equal(a, b) for a, b in zip(ds, before)]
    assert not any(changed) if math.isnan(guard) else all(c for c, d in zip(changed, ds) if d.numel())


@pytest.mark.parametrize("with_params", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scion_inner_product_matches_float64(with_params, dtype):
    ds, dirs, params = _tensors(torch.float32, 0), _tensors(dtype, 1), _tensors(dtype, 2)
    radii = [0.5, 2.0, 1.0, 3.0, 0.25]
    got = kernels.scion_inner_product(ds, dirs, radii, params if with_params else None, backend="torch")
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(inner64(ds, dirs, radii, params if with_params else None), rel=1e-5)


def test_scion_dual_norm_is_nonnegative_for_sign_lmo():
    """With dir = lmo(d) = −sign(d) (ℓ∞ ball), S = Σ r‖d‖₁ ≥ 0 (Pethick et al. 2025)."""
    ds = _tensors(seed=6)
    dirs = [-torch.sign(d) for d in ds]
    radii = [1.0, 2.0, 3.0, 4.0, 5.0]
    got = kernels.scion_inner_product(ds, dirs, radii).item()
    assert got == pytest.approx(sum(r * float(d.abs().sum()) for r, d in zip(radii, ds)), rel=1e-5)


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scion_update_matches_float64(constrained, dtype):
    params, dirs = _tensors(dtype, 0), _tensors(dtype, 1)
    radii = [0.5, 2.0, 1.0, 3.0, 0.25]
    expect = [scion_update64(p, v, r, lr=0.1, scale=0.4, constrained=constrained)
              for p, v, r in zip(params, dirs, radii)]
    kernels.scion_update_(params, dirs, radii, lr=0.1, scale=torch.tensor(0.4), constrained=constrained,
                          backend="torch")
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=8e-3, atol=8e-3)
    for p, e in zip(params, expect):
        torch.testing.assert_close(p.double(), e.to(dtype).double(), **tol)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_scion_update_non_finite_scale_writes_nothing(bad):
    params, dirs = _tensors(seed=0), _tensors(seed=1)
    before = [p.clone() for p in params]
    kernels.scion_update_(params, dirs, [1.0] * 5, lr=0.1, scale=torch.tensor(bad), constrained=True)
    assert all(torch.equal(a, b) for a, b in zip(params, before))


def test_empty_lists_are_no_ops():
    n = kernels.global_norm([])
    kernels.clipped_sgd_update_([], [], [], n, lr=0.1, rule="gclip", gamma=1.0, momentum=0.9)
    kernels.lerp_momentum_([], [], 0.1)
    assert kernels.scion_inner_product([], [], []).item() == 0.0
    kernels.scion_update_([], [], [], lr=0.1, scale=n, constrained=False)
