"""The torch.optim contract on CUDA (skipped without it): a tensor lr without a host read, the fused AdamW skip.
(GradScaler on CUDA: the "cuda" case of test_contract_adamw.py.)"""
from __future__ import annotations

import pytest
import torch

from tests.optim.optim_cases import NAMES, Tiny, loss_of, make
from tests.optim.test_every_optimizer import NoHostSync

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def cuda_tiny(seed: int = 0) -> Tiny:
    return Tiny(seed).cuda()


@pytest.mark.parametrize("name", NAMES)
def test_tensor_lr_on_cuda_never_syncs(name):
    model = cuda_tiny()
    opt = make(name, model, lr=torch.tensor(make(name, Tiny()).defaults["lr"], device="cuda"))
    for step in range(2):
        loss_of(model, step).backward()
        with NoHostSync():
            opt.step()


def test_fused_adamw_skips_a_non_finite_step_on_cuda():
    model = cuda_tiny()
    opt = make("adamw", model, fused=True)
    loss_of(model, 0).backward()
    opt.step()
    before = [p.detach().clone() for p in model.parameters()]
    steps = [opt.state[p]["step"].clone() for p in model.parameters()]
    loss_of(model, 1).backward()
    model.weight.grad[0, 0] = float("nan")
    with NoHostSync():
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(torch.equal(opt.state[p]["step"], s) for p, s in zip(model.parameters(), steps))
    assert opt.stats()["skipped_steps"].item() == 1
