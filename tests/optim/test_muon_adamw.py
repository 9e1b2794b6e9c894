"""Muon against a float64 reference (Nesterov momentum + Newton-Schulz), its AdamW part and our AdamW against torch."""
from __future__ import annotations

import math

import torch

from optim import AdamW, Muon, newton_schulz5


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in [(8, 4), (4, 12), (6,), (3, 5)]]


def _grads(params, seed):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(p.dtype)


def test_muon_matrices_follow_the_reference():
    params = _params()
    mats = params[:2]
    x = [p.detach().double().clone() for p in mats]
    m = [torch.zeros_like(v) for v in x]
    lr, mu, wd = 0.05, 0.95, 0.1
    opt = Muon(mats, lr=lr, momentum=mu, weight_decay=wd, ns_dtype="float32")
    for step in range(3):
        _grads(mats, step)
        for i, p in enumerate(mats):
            g = p.grad.double()
            m[i] = mu * m[i] + g
            u = g + mu * m[i]
            o = newton_schulz5(u.float(), 5, torch.float32).double()
            x[i] = x[i] * (1 - lr * wd) - lr * math.sqrt(max(1.0, p.shape[0] / p.shape[1])) * o
        opt.step()
        for p, e in zip(mats, x):
            assert torch.allclose(p.double(), e, rtol=1e-5, atol=1e-5)


def test_muon_adamw_part_equals_torch_adamw():
    ours, theirs = _params(), _params()
    opt = Muon([{"params": ours[:2]}, {"params": ours[2:], "use_muon": False, "lr": 3e-3}], lr=0.02,
               weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8, ns_dtype="float32")
    ref = torch.optim.AdamW(theirs[2:], lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, foreach=False)
    for step in range(4):
        _grads(ours, step)
        _grads(theirs, step)
        opt.step()
        ref.step()
    for p, q in zip(ours[2:], theirs[2:]):
        assert torch.allclose(p, q, rtol=1e-6, atol=1e-7)


def test_muon_rejects_vectors_in_muon_groups():
    p = torch.nn.Parameter(torch.randn(5))
    try:
        Muon([p])
    except ValueError as err:
        assert "2-D" in str(err)
    else:
        raise AssertionError("expected a ValueError")


def test_our_adamw_is_torch_adamw():
    ours, theirs = _params(), _params()
    opt = AdamW(ours, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    ref = torch.optim.AdamW(theirs, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, foreach=False)
    for step in range(3):
        _grads(ours, step)
        _grads(theirs, step)
        opt.step()
        ref.step()
    for p, q in zip(ours, theirs):
        assert torch.allclose(p, q, rtol=1e-6, atol=1e-7)
    assert opt.stats()["grad_norm"].ndim == 0


def test_muon_adamw_part_in_float64_is_float64_math():
    """float64 parameters: the AdamW part's betas, bias corrections and step counter are float64 (not fp32-rounded
    0.9 / 0.95), so it equals torch.optim.AdamW in float64 to 1e-12 relative over several steps."""
    def f64(ps):
        return [torch.nn.Parameter(p.detach().double()) for p in ps]
    ours, theirs = f64(_params()), f64(_params())
    opt = Muon([{"params": ours[:2]}, {"params": ours[2:], "use_muon": False, "lr": 3e-3}], lr=0.02,
               weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8, ns_dtype="float32")
    ref = torch.optim.AdamW(theirs[2:], lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, foreach=False)
    start = [p.detach().clone() for p in theirs[2:]]
    for step in range(5):
        _grads(ours, step)
        _grads(theirs, step)
        opt.step()
        ref.step()
    for p, q, q0 in zip(ours[2:], theirs[2:], start):
        assert p.dtype == torch.float64
        assert ((p - q).abs().max() / (q - q0).abs().max()).item() <= 1e-12
    assert all(opt.state[p]["step"].dtype == torch.float64 for p in ours[2:])
