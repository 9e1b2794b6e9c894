"""SGD family against float64 references of the papers' equations, and their stated properties.

The optimizers run in float32 (the kernels API takes fp32/bf16); references run in float64 on the same inputs."""
from __future__ import annotations


import pytest
import torch

from optim import SGD, ClippedSGD, DeltaGClip, GClip, NormalizedSGD


def _params(seed=0, shapes=((5, 3), (7,), (2, 2))):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]


def _set_grads(params, scale=1.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = scale * torch.randn(p.shape, generator=g, dtype=p.dtype)


def _flat(ts):
    return torch.cat([t.detach().reshape(-1) for t in ts]).double()


def reference_dgclip(x, g, lr, gamma, delta):
    """Tucat et al. 2025, Def. 2: w - h g with h = lr min(1, max(delta, gamma/||g||)) (h = 0 handled for g = 0)."""
    n = g.norm()
    h = lr * min(1.0, max(delta, (gamma / n).item())) if n > 0 else lr
    return x - h * g, h


@pytest.mark.parametrize("scale", [1e-3, 0.3, 3.0, 1e4])
@pytest.mark.parametrize("delta", [0.0, 1e-3, 0.2])
def test_dgclip_matches_the_paper_equation_and_its_step_size_range(scale, delta):
    params = _params()
    _set_grads(params, scale)
    x0, g = _flat(params), _flat(p.grad for p in params)
    lr, gamma = 0.5, 1.0
    DeltaGClip(params, lr=lr, gamma=gamma, delta=delta).step()
    expected, h = reference_dgclip(x0, g, lr, gamma, delta)
    assert torch.allclose(_flat(params), expected, rtol=1e-6, atol=1e-6)
    moved = (_flat(params) - x0).norm().item()
    assert lr * delta * (1 - 1e-6) <= moved / g.norm().item() <= lr * (1 + 1e-6)  # h in [lr*delta, lr]
    assert moved <= lr * max(gamma, delta * g.norm().item()) * (1 + 1e-6)


def test_dgclip_regimes():
    lr, gamma, delta = 0.1, 1.0, 0.01
    for norm, expected_h in [(0.5, lr), (10.0, lr * gamma / 10.0), (1e3, lr * delta)]:
        p = torch.nn.Parameter(torch.zeros(4))
        p.grad = torch.tensor([norm, 0.0, 0.0, 0.0])
        DeltaGClip([p], lr=lr, gamma=gamma, delta=delta).step()
        assert p[0].item() == pytest.approx(-expected_h * norm, rel=1e-6)


def test_gclip_is_dgclip_with_delta_zero_bitwise():
    a, b = _params(), _params()
    for params in (a, b):
        _set_grads(params, 5.0)
    GClip(a, lr=0.3, gamma=0.7, momentum=0.9).step()
    DeltaGClip(b, lr=0.3, gamma=0.7, delta=0.0, momentum=0.9).step()
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("scale", [0.01, 10.0])
def test_gclip_equals_clip_grad_norm_then_torch_sgd(scale):
    ours, theirs = _params(), _params()
    opt_ours = GClip(ours, lr=0.2, gamma=1.0, momentum=0.9)
    opt_theirs = torch.optim.SGD(theirs, lr=0.2, momentum=0.9)
    for step in range(3):
        _set_grads(ours, scale, seed=step)
        _set_grads(theirs, scale, seed=step)
        opt_ours.step()
        torch.nn.utils.clip_grad_norm_(theirs, max_norm=1.0)
        opt_theirs.step()
    # torch's clip coefficient is gamma/(||g|| + 1e-6)
    assert torch.allclose(_flat(ours), _flat(theirs), rtol=1e-6, atol=1e-7)


def test_gclip_never_moves_further_than_lr_gamma():
    params = _params()
    _set_grads(params, 1e3)
    x0 = _flat(params)
    GClip(params, lr=0.05, gamma=2.0).step()
    assert (_flat(params) - x0).norm().item() == pytest.approx(0.1, rel=1e-6)


def test_norm_is_global_across_groups_and_optionally_per_group():
    a, b = _params(), _params()
    for params in (a, b):
        _set_grads(params, 10.0)
    g = _flat(p.grad for p in a)
    x0 = _flat(a)
    GClip([{"params": a[:1]}, {"params": a[1:]}], lr=1.0, gamma=1.0).step()
    assert torch.allclose(_flat(a), x0 - g / g.norm(), atol=1e-6)
    GClip([{"params": b[:1]}, {"params": b[1:]}], lr=1.0, gamma=1.0, norm_scope="group").step()
    g0, g1 = b[0].grad.reshape(-1), _flat(p.grad for p in b[1:])
    expected = torch.cat([x0[:15] - g0 / g0.norm(), x0[15:] - g1 / g1.norm()])
    assert torch.allclose(_flat(b), expected, atol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
def test_momentum_and_weight_decay_reference(nesterov, mode):
    """Clip-then-average: g' = c (g + wd p) (coupled) or c g; m = mu m + g'; u = g' + mu m or m; coupled p -= lr u,
    decoupled p = p (1 - lr wd) - lr u. Float64."""
    lr, gamma, delta, mu, wd = 0.1, 1.0, 0.05, 0.8, 0.3
    params = [torch.nn.Parameter(p.detach().double()) for p in _params()]
    opt = DeltaGClip(params, lr=lr, gamma=gamma, delta=delta, momentum=mu, weight_decay=wd,
                     nesterov=nesterov, weight_decay_mode=mode)
    x, m = _flat(params), torch.zeros_like(_flat(params))
    for step in range(4):
        _set_grads(params, 3.0 ** step, seed=step)
        g = _flat(p.grad for p in params)
        c = min(1.0, max(delta, gamma / g.norm().item()))
        g_prime = c * (g + wd * x) if mode == "coupled" else c * g
        m = mu * m + g_prime
        u = g_prime + mu * m if nesterov else m
        x = x - lr * u if mode == "coupled" else x * (1 - lr * wd) - lr * u
        opt.step()
        torch.testing.assert_close(_flat(params), x, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_with_momentum_and_weight_decay_is_torch_sgd(momentum, nesterov):
    ours = [torch.nn.Parameter(p.detach().double()) for p in _params()]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt_ours = SGD(ours, lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=0.05)
    opt_theirs = torch.optim.SGD(theirs, lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=0.05)
    for step in range(4):
        _set_grads(ours, seed=step)
        _set_grads(theirs, seed=step)
        opt_ours.step()
        opt_theirs.step()
    torch.testing.assert_close(_flat(ours), _flat(theirs), rtol=1e-14, atol=1e-15)


def test_normalized_sgd_reference_and_bounds():
    params = _params()
    _set_grads(params, 4.0)
    x0, g = _flat(params), _flat(p.grad for p in params)
    NormalizedSGD(params, lr=0.1, beta=0.5).step()
    assert torch.allclose(_flat(params), x0 - 0.1 / (g.norm() + 0.5) * g, atol=1e-6)
    assert (_flat(params) - x0).norm() < 0.1  # step length lr ||g||/(||g|| + beta) < lr


def test_plain_sgd_equals_torch_sgd():
    ours, theirs = _params(), _params()
    opt_ours, opt_theirs = SGD(ours, lr=0.1, momentum=0.9, nesterov=True), \
        torch.optim.SGD(theirs, lr=0.1, momentum=0.9, nesterov=True)
    for step in range(3):
        _set_grads(ours, seed=step)
        _set_grads(theirs, seed=step)
        opt_ours.step()
        opt_theirs.step()
    assert torch.allclose(_flat(ours), _flat(theirs), atol=1e-6)


@pytest.mark.parametrize("cls,kw", [(DeltaGClip, dict(gamma=1.0, delta=0.1)), (GClip, dict(gamma=1.0)),
                                     (NormalizedSGD, dict(beta=1e-8))])
def test_zero_gradient_takes_no_step_even_with_coupled_weight_decay(cls, kw):
    """||g|| = 0: the delta-GClip reference sets the step size to 0, so coupled L2 does not move the weights."""
    params = _params()
    for p in params:
        p.grad = torch.zeros_like(p)
    x0 = _flat(params)
    opt = cls(params, lr=1.0, weight_decay=0.1, **kw)
    opt.step()
    assert torch.equal(_flat(params), x0)
    assert opt.stats()["clip_factor"].item() == 0.0
    plain = _params()
    for p in plain:
        p.grad = torch.zeros_like(p)
    SGD(plain, lr=1.0, weight_decay=0.1).step()  # plain SGD keeps torch's semantics: the decay still applies
    torch.testing.assert_close(_flat(plain), 0.9 * x0)


def test_group_scope_reports_the_mean_of_the_group_factors():
    params = [torch.nn.Parameter(p.detach().double()) for p in _params()]
    _set_grads(params, 5.0)
    groups = [{"params": params[:1]}, {"params": params[1:]}]
    gamma, delta = 1.0, 0.01
    norms = [params[0].grad.norm().item(), _flat(p.grad for p in params[1:]).norm().item()]
    factors = [min(1.0, max(delta, gamma / n)) for n in norms]
    x0 = _flat(params)
    opt = DeltaGClip(groups, lr=0.1, gamma=gamma, delta=delta, norm_scope="group")
    opt.step()
    assert opt.stats()["clip_factor"].item() == pytest.approx(sum(factors) / 2, rel=1e-12)
    expected = torch.cat([x0[:15] - 0.1 * factors[0] * params[0].grad.reshape(-1),
                          x0[15:] - 0.1 * factors[1] * _flat(p.grad for p in params[1:])])
    torch.testing.assert_close(_flat(params), expected, rtol=1e-12, atol=1e-14)


def test_tensor_scope_is_the_per_tensor_delta_gclip_variant():
    """deltaGClip_c: each tensor w -= lr min(1, max(delta, gamma/||g_w||)) g_w (a zero-norm tensor stays put)."""
    params = [torch.nn.Parameter(p.detach().double()) for p in _params()]
    _set_grads(params, 4.0)
    params[1].grad.zero_()
    x0 = [p.detach().clone() for p in params]
    gamma, delta, lr = 1.0, 0.05, 0.2
    opt = DeltaGClip(params, lr=lr, gamma=gamma, delta=delta, norm_scope="tensor")
    opt.step()
    factors = []
    for p, x in zip(params, x0):
        n = p.grad.norm().item()
        c = 0.0 if n == 0 else min(1.0, max(delta, gamma / n))
        factors.append(c)
        torch.testing.assert_close(p.detach(), x - lr * c * p.grad, rtol=1e-12, atol=1e-14)
    assert opt.stats()["clip_factor"].item() == pytest.approx(sum(factors) / len(factors), rel=1e-12)


def test_bad_arguments_are_named():
    p = _params()
    with pytest.raises(ValueError, match="gamma"):
        ClippedSGD(p, lr=0.1, rule="gclip")
    with pytest.raises(ValueError, match="delta"):
        DeltaGClip(p, lr=0.1, gamma=1.0, delta=2.0)
    with pytest.raises(ValueError, match="norm_scope"):
        GClip(p, lr=0.1, gamma=1.0, norm_scope="layer")
