"""Run under torchrun (gloo, 2 ranks; 4 for hsdp): optim.norm_in_backward under ddp (the DDP communication hook) and
fsdp / hsdp (post-accumulate-grad hooks on the reduce-scattered shards) equals the plain step, for every optimizer
whose step uses the global norm.

`norm_in_backward_worker.py MODE[,MODE] NAME:STEPS[,NAME:STEPS]`: for each mode and optimizer, two copies of a tiny GPT
from one seed, one with the norm taken during backward, train STEPS steps of 2 micro-batches each on the same data
(the trainer's backward closure, trainer/passes.py). Rank 0 prints a RESULT JSON line per pair: the largest loss
difference, the largest relative differences of grad_norm and clip_factor, the smallest clip factor (clipping
active?) and how often step() of the norm-in-backward copy called kernels.global_norm (must be 0).
"""
from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

import optim
from model import GPT, ModelConfig
from optim.kernel_api import kernels
from trainer.parallel import apply_fsdp
from trainer.passes import make_backward

SETTINGS = {  # clipping active on some of the steps
    "gclip": dict(lr=0.1, gamma=0.5, momentum=0.9), "dgclip": dict(lr=0.1, gamma=0.5, delta=0.2),
    "normalized_sgd": dict(lr=0.1, beta=0.1), "clipped_scion": dict(lr=0.1, rho=1500.0, ns_dtype="float32"),
    "unconstrained_clipped_scion": dict(lr=0.1, rho=1500.0, ns_dtype="float32"),
    "adamw": dict(lr=1e-3, max_grad_norm=0.5), "muon": dict(lr=0.01, max_grad_norm=0.5, ns_dtype="float32"),
}
MODEL = dict(n_layer=1, n_head=2, n_embd=16, vocab_size=67, block_size=8)  # 67 rows: an uneven fsdp split
ACCUM, ROWS = 2, 2  # micro-batches per step, rows per micro-batch per rank


def copy_of(mode: str, name: str, in_backward: bool):
    torch.manual_seed(0)
    raw = GPT(ModelConfig(**MODEL))
    if mode in ("fsdp", "hsdp"):  # hsdp: 2 replicas x 2 shards (4 ranks)
        mesh = None
        if mode == "hsdp":
            from torch.distributed.device_mesh import init_device_mesh
            mesh = init_device_mesh("cpu", (2, dist.get_world_size() // 2), mesh_dim_names=("replicate", "shard"))
        model = apply_fsdp(raw, device=torch.device("cpu"), dtype="float32", compile_blocks=False, mesh=mesh)
    else:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(raw, gradient_as_bucket_view=True, bucket_cap_mb=0.01)  # several buckets
    opt = optim.build(raw, optim.OptimConfig(name=name, **SETTINGS[name]))
    if mode == "ddp":
        opt.agree_across(dist.group.WORLD)
    params = [p for p in raw.parameters() if p.requires_grad]
    norm = optim.BackwardNorm.attach(model, params) if in_backward else None
    if norm is not None:
        opt.take_norm_from(norm)
    return model, opt, params, norm


def run(mode: str, name: str, steps: int, rank: int, world: int, calls: list) -> dict:
    copies = [copy_of(mode, name, flag) for flag in (False, True)]
    gen = torch.Generator().manual_seed(1)
    out = {"mode": mode, "name": name, "loss_diff": 0.0, "grad_norm_rel": 0.0, "clip_factor_rel": 0.0,
           "min_clip_factor": 1.0, "max_grad_norm": 0.0, "global_norm_calls": 0}
    for _ in range(steps):
        x = torch.randint(0, MODEL["vocab_size"], (ACCUM, ROWS * world, MODEL["block_size"] + 1), generator=gen)
        mine = [(b[rank * ROWS:(rank + 1) * ROWS, :-1], b[rank * ROWS:(rank + 1) * ROWS, 1:]) for b in x]
        results = []
        for model, opt, params, norm in copies:
            loss = make_backward(model, mine, torch.device("cpu"), "float32", params,
                                 before_last_micro_batch=norm.arm if norm is not None else None)()
            calls.clear()
            opt.step()
            if norm is not None:
                out["global_norm_calls"] += len(calls)
            results.append((loss.item(), {k: v.item() for k, v in opt.stats().items()}))
        (loss_a, a), (loss_b, b) = results
        out["loss_diff"] = max(out["loss_diff"], abs(loss_a - loss_b))
        for key in ("grad_norm", "clip_factor"):
            if key in a:
                rel = abs(a[key] - b[key]) / max(abs(a[key]), 1e-12)
                out[f"{key}_rel"] = max(out[f"{key}_rel"], rel)
        out["min_clip_factor"] = min(out["min_clip_factor"], a.get("clip_factor", 1.0))
        out["max_grad_norm"] = max(out["max_grad_norm"], a["grad_norm"])
    return out


def main() -> None:
    modes = sys.argv[1].split(",")
    runs = [(item.split(":")[0], int(item.split(":")[1])) for item in sys.argv[2].split(",")]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    calls: list = []
    real = kernels.global_norm
    kernels.global_norm = lambda *a, **k: calls.append(1) or real(*a, **k)
    for mode in modes:
        for name, steps in runs:
            result = run(mode, name, steps, rank, world, calls)
            if rank == 0:
                print("RESULT " + json.dumps(result), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
