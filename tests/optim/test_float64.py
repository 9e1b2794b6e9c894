"""float64 parameters: every optimizer of the registry steps them on the torch reference path, in float64 math."""
from __future__ import annotations

import pytest
import torch

from optim.kernel_api import kernels
import optim
from model import GPT, ModelConfig


@pytest.mark.parametrize("name", list(optim.OPTIMIZER_NAMES))
def test_every_optimizer_steps_float64_parameters_in_float64(name):
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=64, block_size=16)).double()
    kw = {"gamma": 0.5} if name in ("gclip", "dgclip") else {}
    opt = optim.build(model, optim.OptimConfig(name=name, lr=1e-3, backend="torch", **kw))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    idx = torch.randint(0, 64, (2, 16))
    _, loss = model(idx, idx)
    loss.backward()
    opt.step()
    for n, p in model.named_parameters():
        assert p.dtype == torch.float64, n
        assert torch.isfinite(p).all(), n
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    stats = optim.step_stats(opt)
    assert stats["grad_norm"].dtype == torch.float64  # the norm itself is float64 math


def test_float64_kernel_references_do_float64_math():
    g = torch.Generator().manual_seed(0)
    ts = [torch.randn(7, 5, generator=g, dtype=torch.float64) for _ in range(3)]
    exact = torch.linalg.vector_norm(torch.cat([t.reshape(-1) for t in ts]))
    assert kernels.global_norm(ts, backend="torch").item() == pytest.approx(exact.item(), rel=1e-15)
    ds = [t.clone() for t in ts]
    grads = [torch.randn(7, 5, generator=g, dtype=torch.float64) for _ in range(3)]
    kernels.lerp_momentum_(ds, grads, 0.1, backend="torch")
    for d, t, gr in zip(ds, ts, grads):
        torch.testing.assert_close(d, 0.9 * t + 0.1 * gr, rtol=1e-15, atol=1e-15)
