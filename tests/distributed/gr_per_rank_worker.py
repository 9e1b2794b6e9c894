"""torchrun worker of test_gr_per_rank.py: GR on a DDP model over gloo, each rank with its half of the batch; rank 0
saves the mixed gradients of sync_perturbations=True and False to the path in argv[1]."""
from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from optim import GradientRegularization, GRConfig
from trainer.passes import make_backward


class Regression(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(4, 8), torch.nn.Linear(8, 1)

    def forward(self, x, y, return_logits=True):  # the trainer's make_backward asks for the loss only
        out = self.fc2(torch.tanh(self.fc1(x)))
        return out, ((out.squeeze(-1) - y) ** 2).mean()


def data():
    g = torch.Generator().manual_seed(7)
    return torch.randn(8, 4, generator=g), torch.randn(8, generator=g)


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    x, y = data()
    mine = [(x[4 * rank + 2 * i: 4 * rank + 2 * i + 2], y[4 * rank + 2 * i: 4 * rank + 2 * i + 2]) for i in range(2)]
    out = {}
    for sync in (True, False):
        torch.manual_seed(0)
        model = Regression()
        ddp = DDP(model)
        params = list(model.parameters())
        backward = make_backward(ddp, mine, torch.device("cpu"), "float32", params)
        gr = GradientRegularization(GRConfig(enabled=True, r=0.5, alpha=0.7, sync_perturbations=sync), 10)
        gr.compute(params, backward, step=3)
        out[sync] = [p.grad.clone() for p in params]
    if rank == 0:
        torch.save(out, sys.argv[1])
    dist.destroy_process_group()
    print(f"rank {rank}: ok")


if __name__ == "__main__":
    main()
