"""Fused q/k/v as three layers (split sizes in the param groups) for Scion, Clipped Scion and Muon, in float64
against references that hold the three matrices separately (Scion Table 2 spectral LMO, Pethick et al. eq. 4.3)."""
from __future__ import annotations

import math

import pytest
import torch

import optim
from model import GPT, ModelConfig
from optim import ClippedScion, LMOSpec, Muon, layer_norm
from optim.splits import parse_split_rule, split_sizes_for

N, M = 4, 6  # each of q, k, v is (N, M); the fused tensor is (3N, M)


def exact_lmo(d: torch.Tensor) -> torch.Tensor:
    """Spectral LMO with the hidden scaling: -sqrt(d_out/d_in) U V^T (float64 SVD)."""
    U, _, Vh = torch.linalg.svd(d, full_matrices=False)
    return -math.sqrt(d.shape[0] / d.shape[1]) * (U @ Vh)


def fused_and_other(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(0.1 * torch.randn(shape, generator=g, dtype=torch.float64))
            for shape in [(3 * N, M), (5, M)]]


def grads(seed, v_scale=1.0):
    """Gradients of (fused qkv, other); v's block scaled by v_scale (the issue's v >> q, k case)."""
    g = torch.Generator().manual_seed(100 + seed)
    qkv = torch.randn(3 * N, M, generator=g, dtype=torch.float64)
    qkv[2 * N:] *= v_scale
    return [qkv, torch.randn(5, M, generator=g, dtype=torch.float64)]


def reference_scion(x0, grads_per_step, lr, rho, alpha, constrained, radius):
    """Algorithms 3/4 with q, k, v as separate layers (layers: q, k, v, other), exact spectral LMOs."""
    xs = list(x0[0].split(N)) + [x0[1]]
    xs = [x.clone() for x in xs]
    ds = [torch.zeros_like(x) for x in xs]
    for g in grads_per_step:
        gs = list(g[0].split(N)) + [g[1]]
        ds = [(1 - alpha) * d + alpha * gi for d, gi in zip(ds, gs)]
        ss = [exact_lmo(d) for d in ds]
        if constrained:
            G = sum((d * (x - radius * s)).sum() for d, x, s in zip(ds, xs, ss))
        else:
            G = -sum(radius * (d * s).sum() for d, s in zip(ds, ss))
        eta = 1.0 if rho is None else min(1.0, G.item() / rho)
        keep = 1 - lr * eta if constrained else 1.0
        xs = [keep * x + lr * eta * radius * s for x, s in zip(xs, ss)]
    return [torch.cat(xs[:3]), xs[3]]


def scion_groups(params, split=True, radius=2.0):
    return [{"params": params, "norm": "spectral", "radius": radius,
             "split_sizes": [[N, N, N] if split else None, None]}]


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("rho", [None, 3.0])
def test_scion_treats_split_pieces_as_separate_layers(constrained, rho):
    params = fused_and_other()
    x0 = [p.detach().clone() for p in params]
    opt = ClippedScion(scion_groups(params), lr=0.05, rho=rho, alpha=0.5, constrained=constrained,
                       spectral_lmo="svd")
    steps = []
    for step in range(3):
        for p, g in zip(params, grads(step, v_scale=30.0)):
            p.grad = g
        steps.append(grads(step, v_scale=30.0))
        opt.step()
    expected = reference_scion(x0, steps, 0.05, rho, 0.5, constrained, 2.0)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-10, atol=1e-12)


def test_each_piece_steps_its_full_radius_whatever_v_does():
    """Unconstrained Scion: ||delta q||_spec = ||delta k|| = ||delta v|| = lr*r with the (n, n) scaling, even when
    v's gradient is 100x q's and k's; the unsplit (3n, n) matrix gives q and k only a fraction of their step."""
    lr, r, n = 0.01, 2.0, 5
    g = torch.Generator().manual_seed(3)
    grad = torch.randn(3 * n, n, generator=g, dtype=torch.float64)
    grad[2 * n:] = 100.0 * torch.linalg.qr(grad[2 * n:])[0]  # a well-conditioned v gradient 100x larger
    for split in (True, False):
        p = torch.nn.Parameter(torch.zeros(3 * n, n, dtype=torch.float64))
        opt = ClippedScion([{"params": [p], "norm": "spectral", "radius": r, "split_sizes": [[n] * 3 if split else
                                                                                            None]}],
                           lr=lr, rho=None, alpha=1.0, spectral_lmo="svd")
        p.grad = grad.clone()
        opt.step()
        steps = [layer_norm(piece, LMOSpec("spectral")).item() / (lr * r) for piece in p.detach().split(n)]
        if split:
            assert steps == pytest.approx([1.0, 1.0, 1.0], rel=1e-10)
        else:
            assert max(steps[:2]) < 0.1  # q and k get a small fraction of their step next to a dominant v


def test_dual_norm_is_the_sum_over_pieces():
    params = fused_and_other()
    opt = ClippedScion(scion_groups(params), lr=0.01, rho=1e9, alpha=1.0, spectral_lmo="svd")
    gs = grads(1)
    for p, g in zip(params, gs):
        p.grad = g
    opt.step()
    pieces = list(gs[0].split(N)) + [gs[1]]
    expected = sum(2.0 * torch.linalg.matrix_norm(d, ord="nuc") * math.sqrt(d.shape[0] / d.shape[1])
                   for d in pieces)
    assert opt.stats()["dual_norm"].item() == pytest.approx(expected.item(), rel=1e-12)


def test_split_parameter_equals_separate_parameters_with_newton_schulz():
    fused = fused_and_other()
    separate = [torch.nn.Parameter(t.detach().clone()) for t in fused[0].detach().split(N)]
    separate.append(torch.nn.Parameter(fused[1].detach().clone()))
    kw = dict(lr=0.05, rho=3.0, alpha=0.5, constrained=True, ns_dtype=torch.float64)
    opt_a = ClippedScion(scion_groups(fused), **kw)
    opt_b = ClippedScion([{"params": separate, "norm": "spectral", "radius": 2.0}], **kw)
    for step in range(3):
        g = grads(step, v_scale=10.0)
        fused[0].grad, fused[1].grad = g
        for p, gi in zip(separate, list(g[0].split(N)) + [g[1]]):
            p.grad = gi.clone()
        opt_a.step()
        opt_b.step()
    torch.testing.assert_close(fused[0].detach(), torch.cat([p.detach() for p in separate[:3]]), rtol=1e-12,
                               atol=1e-14)
    torch.testing.assert_close(opt_a.stats()["dual_norm"], opt_b.stats()["dual_norm"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_orthogonalizes_each_piece_with_its_own_shape_scale(nesterov):
    """Muon on a (3N, M) fused qkv with splits = three (N, M) matrices: p -= lr sqrt(max(1, N/M)) U V^T(u_piece)."""
    params = fused_and_other()
    x0 = [p.detach().clone() for p in params]
    opt = Muon([{"params": params, "split_sizes": [[N, N, N], None]}], lr=0.02, momentum=0.9, nesterov=nesterov,
               weight_decay=0.1, spectral_lmo="svd")
    xs = list(x0[0].split(N)) + [x0[1]]
    bufs = [torch.zeros_like(x) for x in xs]
    for step in range(2):
        g = grads(step, v_scale=30.0)
        params[0].grad, params[1].grad = g[0].clone(), g[1].clone()
        opt.step()
        gs = list(g[0].split(N)) + [g[1]]
        bufs = [0.9 * b + gi for b, gi in zip(bufs, gs)]
        us = [gi + 0.9 * b for gi, b in zip(gs, bufs)] if nesterov else bufs
        xs = [x * (1 - 0.02 * 0.1) + 0.02 * math.sqrt(max(1.0, x.shape[0] / x.shape[1])) * exact_lmo(u)
              / math.sqrt(u.shape[0] / u.shape[1]) for x, u in zip(xs, us)]
    torch.testing.assert_close(params[0].detach(), torch.cat(xs[:3]), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(params[1].detach(), xs[3], rtol=1e-10, atol=1e-12)


def test_default_rules_split_the_gpt_qkv_into_three():
    cfg = ModelConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=64, block_size=16, bias=True)
    model = GPT(cfg)
    for name in ("scion", "clipped_scion", "muon"):
        opt = optim.build(model, optim.OptimConfig(name=name))
        by_name = {n: s for g in opt.param_groups for n, s in zip(g["param_names"], g["split_sizes"])}
        attn = model.blocks[0].attn.qkv.weight.shape[0] // 3
        assert by_name["blocks.0.attn.qkv.weight"] == [attn] * 3
        assert by_name["blocks.0.attn.proj.weight"] is None
        if name != "muon":  # Muon's AdamW part is elementwise: the bias split is carried but changes nothing
            assert by_name["blocks.0.attn.qkv.bias"] == [attn] * 3
        assert "norm=spectral radius=50 split=1 " in optim.describe_groups(opt) or name == "muon"


def test_split_rules_are_checked_with_the_key_named():
    assert parse_split_rule("a.*.w=3", "k") == ("a.*.w", [3], None)
    assert parse_split_rule("w=2,4", "k") == ("w", [2, 4], None)
    assert parse_split_rule("w=3@1", "k") == ("w", [3], 1)
    for bad in ("w", "w=", "w=0", "=3", "w=a,b", "w=3@2", "w=3@"):
        with pytest.raises(ValueError, match="optim.groups.hidden.splits: bad split rule"):
            parse_split_rule(bad, "optim.groups.hidden.splits")
    with pytest.raises(ValueError, match="not divisible by 4"):
        split_sizes_for("w", torch.Size([6, 2]), ["w=4"], "key")
    with pytest.raises(ValueError, match="summing to 5"):
        split_sizes_for("w", torch.Size([6, 2]), ["w=2,3"], "key")
    assert split_sizes_for("w", torch.Size([6, 2]), ["x=2", "w=1"], "key") is None
    with pytest.raises(ValueError, match="param group 0: split_sizes"):
        ClippedScion(scion_groups(fused_and_other())[:1] and [{"params": fused_and_other(), "norm": "spectral",
                                                               "split_sizes": [[5, 5], None]}], lr=0.1, rho=1.0)
