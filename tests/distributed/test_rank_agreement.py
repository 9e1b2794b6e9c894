"""A NaN that appears on one rank only, after DDP's all-reduce, makes every rank skip the step (a 4-byte flag
all-reduce beside the optimizer's global norm); without that agreement the ranks diverge and the cross-rank checksum
names them."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP

from tests.helpers import free_port

pytestmark = pytest.mark.slow

POISONED_STEP = 2


def _poison_rank1_after_allreduce(state, bucket):
    """DDP comm hook: the normal all-reduce, then rank 1 alone gets a NaN at POISONED_STEP (a faulty device)."""
    future = default_hooks.allreduce_hook(None, bucket)

    def poison(fut):
        value = fut.value()
        grad = value[0] if isinstance(value, (list, tuple)) else value
        state["calls"] += 1
        if dist.get_rank() == 1 and state["calls"] == POISONED_STEP:
            grad[-1] = float("nan")
        return grad

    return future.then(poison)


def _worker(rank: int, port: int, agree: bool, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from optim import AdamW
    from trainer import passes
    from trainer.distributed import ConsistencyError, check_consistency
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    ddp = DDP(model)
    ddp.register_comm_hook({"calls": 0}, _poison_rank1_after_allreduce)
    params = list(model.parameters())
    optimizer = AdamW(params, lr=0.1)
    if agree:  # the trainer does this under ddp: the step's norm carries a cross-rank flag
        optimizer.agree_across(dist.group.WORLD)
    ddp_forward = ddp.forward
    ddp.forward = lambda x, y, **kwargs: (None, torch.nn.functional.mse_loss(ddp_forward(x), y))
    generator = torch.Generator().manual_seed(rank)
    outcome = "consistent"
    for step in range(1, 5):
        batch = [(torch.randn(4, 8, generator=generator), torch.randn(4, 1, generator=generator))]
        passes.make_backward(ddp, batch, torch.device("cpu"), "float32", params)()
        optimizer.step()
        try:
            check_consistency(params, step)
        except ConsistencyError as err:
            outcome = str(err)
            break
    results[rank] = (outcome, int(optimizer.stats()["skipped_steps"]))
    dist.destroy_process_group()


def _run(agree: bool) -> dict:
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(free_port(), agree, results), nprocs=2)
    return dict(results)


def test_one_rank_nan_is_skipped_by_every_rank():
    results = _run(agree=True)
    assert results == {0: ("consistent", 1), 1: ("consistent", 1)}


def test_without_agreement_ranks_diverge_and_the_checksum_names_them():
    results = _run(agree=False)
    for rank in (0, 1):
        message, _ = results[rank]
        assert message.startswith(f"step {POISONED_STEP}: the parameters of rank(s) 1 differ from rank 0's")
    assert results[0][1] == 0 and results[1][1] == 1  # each rank decided alone
