"""Run under torchrun (gloo): every optimizer on an FSDP2-sharded GPT equals the same optimizer on the whole model.

Each rank trains two copies from the same seed: a plain one on the whole global batch (the one-process run) and an
FSDP2-sharded one on its half of the batch. After a few steps the gathered sharded parameters, the losses and the
optimizer stats must agree. Writes a JSON line per optimizer on rank 0. `fsdp_worker.py NAMES float64` runs
float64 models (FLOAT64_SETTINGS), where sharded and whole must agree to float64 rounding.
"""
from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist

import optim
from model import GPT, ModelConfig
from optim.config import OptimConfig
from optim.sharding import bytes_of, optimizer_state_bytes
from trainer.parallel import accumulating, apply_fsdp, full_model_state
from trainer.parallel_dims import ParallelDims

SETTINGS = {  # small steps that move every parameter visibly in 3 steps
    "adamw": dict(lr=1e-2, weight_decay=0.1), "muon": dict(lr=0.02, adamw_lr=1e-2, weight_decay=0.1),
    "sgd": dict(lr=0.5, momentum=0.9, weight_decay=0.01), "gclip": dict(lr=0.5, gamma=0.5),
    "normalized_sgd": dict(lr=0.05), "dgclip": dict(lr=0.5, gamma=0.5, delta=0.1),
    "scion": dict(lr=0.01), "unconstrained_scion": dict(lr=1e-3),
    "clipped_scion": dict(lr=0.01, rho=1e3), "unconstrained_clipped_scion": dict(lr=1e-3, rho=1e4),  # clipping
}
# float64 mode: the optimizers whose norms, clip factors or `1 - lr` went through fp32 partial sums under FSDP;
# exact SVD for the spectral LMO so nothing but the sharding differs (the float64 references are tests/optim's)
FLOAT64_SETTINGS = {
    "gclip": dict(lr=0.5, gamma=0.5), "dgclip": dict(lr=0.5, gamma=0.5, delta=0.1),
    "muon": dict(lr=0.02, adamw_lr=1e-2, weight_decay=0.1, max_grad_norm=0.5, spectral_lmo="svd"),
    "clipped_scion": dict(lr=0.01, rho=1e3, spectral_lmo="svd"),
}
MODEL = dict(n_layer=2, n_head=2, n_embd=24, vocab_size=67, block_size=8, norm="rmsnorm", pos_emb="rope",
             mlp="relu2", qk_norm=True, bias=False)  # 67 and 72 rows split unevenly over 2 ranks


def run(name: str, rank: int, world: int, float64: bool = False, mesh=None, accum: int = 1, steps: int = 3) -> dict:
    torch.manual_seed(0)
    whole = GPT(ModelConfig(**MODEL))
    if float64:
        whole = whole.double()
    sharded = copy.deepcopy(whole)
    apply_fsdp(sharded, device=torch.device("cpu"), dtype="float32", compile_blocks=False, mesh=mesh)
    if float64:
        cfg = OptimConfig(name=name, backend="torch", **FLOAT64_SETTINGS[name])
    else:
        ns = {"ns_dtype": "float32"} if "scion" in name or name == "muon" else {}
        cfg = OptimConfig(name=name, **ns, **SETTINGS[name])
    opt_whole, opt_sharded = optim.build(whole, cfg), optim.build(sharded, cfg)
    gen = torch.Generator().manual_seed(1)
    per_rank = 2 * accum
    result = {"name": name, "accum": accum, "loss_diff": 0.0, "stat_diff": 0.0}
    for _ in range(steps):
        x = torch.randint(0, MODEL["vocab_size"], (per_rank * world, MODEL["block_size"]), generator=gen)
        y = torch.randint(0, MODEL["vocab_size"], x.shape, generator=gen)
        _, loss_whole = whole(x, y)
        loss_whole.backward()
        loss_sharded = torch.zeros(())
        for i in range(accum):  # FSDP2 reduce-scatters the mean over ranks: the whole batch's gradient
            mine = slice(rank * per_rank + 2 * i, rank * per_rank + 2 * i + 2)
            with accumulating(sharded) if i < accum - 1 else torch.enable_grad():
                _, loss_mine = sharded(x[mine], y[mine])
                (loss_mine / accum).backward()
            loss_sharded += loss_mine.detach() / accum
        dist.all_reduce(loss_sharded)
        result["loss_diff"] = max(result["loss_diff"], abs(loss_sharded.item() / world - loss_whole.item()))
        opt_whole.step()
        opt_sharded.step()
        opt_whole.zero_grad()
        opt_sharded.zero_grad()
        a, b = optim.step_stats(opt_whole), optim.step_stats(opt_sharded)
        for key in a:
            diff = (a[key].double() - b[key].double()).abs().item() / max(1.0, abs(a[key].double().item()))
            result["stat_diff"] = max(result["stat_diff"], diff)
    full = full_model_state(sharded)
    result["param_diff"] = max((full[k] - v).abs().max().item() for k, v in whole.state_dict().items())
    result["dtypes"] = sorted({str(v.dtype) for v in a.values()} | {str(v.dtype) for v in b.values()}
                              | {str(v.dtype) for v in full.values()})
    result["moved"] = min((whole.state_dict()[k] - v).abs().max().item()
                          for k, v in GPT(ModelConfig(**MODEL)).state_dict().items() if "norm" not in k)
    result["param_bytes_ratio"] = bytes_of(sharded.parameters()) / bytes_of(whole.parameters())
    result["state_bytes_ratio"] = optimizer_state_bytes(opt_sharded) / max(1, optimizer_state_bytes(opt_whole))
    return result


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    float64 = "float64" in sys.argv[2:]
    opts = dict(a.split("=", 1) for a in sys.argv[2:] if "=" in a)  # shard=N accum=1,2 steps=N
    names = sys.argv[1].split(",") if len(sys.argv) > 1 else list(FLOAT64_SETTINGS if float64 else SETTINGS)
    shard = int(opts.get("shard", world))
    mesh = ParallelDims("hsdp" if shard < world else "fsdp", world, shard).build_mesh("cpu")
    for name in names:
        for accum in (int(a) for a in opts.get("accum", "1").split(",")):
            result = run(name, rank, world, float64, mesh=mesh, accum=accum, steps=int(opts.get("steps", 3)))
            if rank == 0:
                print("RESULT " + json.dumps(result), flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
