"""Run under torchrun (gloo): count the bytes each collective brings into this rank during one training step of a
small GPT (ddp and fsdp, and hsdp at 4 ranks as 2 replicas x 2 shards; Clipped Scion; ddp's buffer broadcast counted too: the formula has none, so a broadcast of
the RoPE buffers fails the comparison) and write them (argv[1]/rank{r}.json) beside trainer.scale.step_bytes's formula."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import optim
from model import GPT, ModelConfig
from optim.config import OptimConfig
from trainer.parallel import accumulating, apply_fsdp, wrap_model
from trainer.parallel_dims import ParallelDims
from trainer.scale import step_bytes

MODEL = dict(n_layer=2, n_head=2, n_embd=24, vocab_size=67, block_size=8, norm="rmsnorm", pos_emb="rope",
             mlp="relu2", qk_norm=True, bias=False)
CASES = (("ddp", 1, False), ("ddp", 4, False), ("fsdp", 1, False), ("fsdp", 4, False), ("fsdp", 4, True))
HSDP_CASES = (("hsdp", 1, False), ("hsdp", 4, False), ("hsdp", 4, True))  # at 4 ranks: 2 replicas x 2 shards
HSDP_SHARD = 2
TINY = 64  # scalar all-reduces (loss, norm, dual norm, flags) are left out of the accounting


def _group_of(args, kwargs):
    group = kwargs.get("group")
    return group if group is not None else next((a for a in args if isinstance(a, dist.ProcessGroup)), None)


def counting(rank: int, world: int, counts: dict):
    frac = (world - 1) / world
    def frac_of(args, kwargs):  # (k - 1) / k of the collective's group of k ranks
        k = dist.get_world_size(_group_of(args, kwargs))
        return (k - 1) / k

    def add(key, value):
        counts[key] = counts.get(key, 0) + value

    real = {name: getattr(dist, name) for name in ("all_gather_single", "reduce_scatter_single", "broadcast",
                                                     "all_to_all_single", "_broadcast_coalesced",
                                                     "all_gather_into_tensor", "all_reduce")}

    def all_gather_single(output_tensor, input_tensor, *args, **kwargs):
        add("all_gather (parameters)", frac_of(args, kwargs) * output_tensor.numel() * output_tensor.element_size())
        return real["all_gather_single"](output_tensor, input_tensor, *args, **kwargs)

    def reduce_scatter_single(output, input, *args, **kwargs):
        add("reduce_scatter (gradients)", frac_of(args, kwargs) * input.numel() * input.element_size())
        return real["reduce_scatter_single"](output, input, *args, **kwargs)

    def broadcast(tensor, src, *args, **kwargs):
        if src != rank:
            add("broadcast (Newton-Schulz results)", tensor.numel() * tensor.element_size())
        return real["broadcast"](tensor, src, *args, **kwargs)

    def all_to_all_single(output, input, output_split_sizes=None, input_split_sizes=None, *args, **kwargs):
        me = dist.get_rank(_group_of(args, kwargs))  # this rank's index in the group
        received = sum(n for r, n in enumerate(output_split_sizes) if r != me)
        add("all_to_all", received * output.element_size())
        return real["all_to_all_single"](output, input, output_split_sizes, input_split_sizes, *args, **kwargs)

    def all_gather_into_tensor(output_tensor, input_tensor, *args, **kwargs):  # the ddp Newton-Schulz exchange
        add("all_gather (Newton-Schulz results)",
            frac_of(args, kwargs) * output_tensor.numel() * output_tensor.element_size())
        return real["all_gather_into_tensor"](output_tensor, input_tensor, *args, **kwargs)

    def all_reduce(tensor, *args, **kwargs):  # hsdp: gradient shards across replicas (not scalars; ddp: the hook)
        k = dist.get_world_size(_group_of(args, kwargs))
        if tensor.numel() > TINY and k < world:
            add("all_reduce (gradients across replicas)", 2 * (k - 1) / k * tensor.numel() * tensor.element_size())
        return real["all_reduce"](tensor, *args, **kwargs)

    def _broadcast_coalesced(group, tensors, *args, **kwargs):  # DDP's buffer broadcast (none expected)
        add("broadcast (DDP buffers)", sum(t.numel() * t.element_size() for t in tensors))
        return real["_broadcast_coalesced"](group, tensors, *args, **kwargs)

    for name, fn in (("all_gather_single", all_gather_single), ("reduce_scatter_single", reduce_scatter_single),
                     ("broadcast", broadcast), ("all_to_all_single", all_to_all_single),
                     ("_broadcast_coalesced", _broadcast_coalesced),
                     ("all_gather_into_tensor", all_gather_into_tensor), ("all_reduce", all_reduce)):
        setattr(dist, name, fn)

    def ddp_hook(state, bucket):
        add("all_reduce (gradients)", 2 * frac * bucket.buffer().numel() * bucket.buffer().element_size())
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
        return allreduce_hook(state, bucket)

    return ddp_hook


def one_step(mode: str, accum: int, defer: bool, rank: int, world: int, mesh=None) -> dict:
    torch.manual_seed(0)
    model = GPT(ModelConfig(**MODEL))
    shapes_model = copy.deepcopy(model)
    counts: dict = {}
    if mode == "ddp":  # the trainer's wrapper (broadcast_buffers=False); its construction-time sync is not counted
        wrapped = wrap_model(model, dims=ParallelDims("ddp", world, 1), device=torch.device("cpu"),
                             dtype="float32", compile=False)
        wrapped.register_comm_hook(None, counting(rank, world, counts))
    else:
        counting(rank, world, counts)
        wrapped = apply_fsdp(model, device=torch.device("cpu"), dtype="float32", compile_blocks=False, mesh=mesh)
    opt = optim.build(model, OptimConfig(name="unconstrained_clipped_scion", lr=1e-3, rho=1e4))
    for i in range(accum):
        x = torch.randint(0, MODEL["vocab_size"], (2, MODEL["block_size"]))
        ctx = accumulating(wrapped, defer_grad_sync=defer) if i < accum - 1 else torch.enable_grad()
        with ctx:
            wrapped(x, x)[1].backward()
    opt.step()
    formula = step_bytes(shapes_model, world, mode=mode, optimizer="unconstrained_clipped_scion", accum=accum,
                         defer_grad_sync=defer, shard_degree=HSDP_SHARD if mode == "hsdp" else None,
                         param_bytes=4, reduce_bytes=4, ns_bytes=2, rank=rank)
    if "all_to_all (to owners)" in formula:
        formula["all_to_all"] = formula.pop("all_to_all (to owners)") + formula.pop("all_to_all (from owners)")
    return {"mode": mode, "accum": accum, "defer": defer, "rank": rank, "world": world,
            "measured": {k: round(v) for k, v in counts.items()}, "formula": formula}


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    rows = [one_step(mode, accum, defer, rank, world) for mode, accum, defer in CASES]
    if world == 2 * HSDP_SHARD:
        mesh = ParallelDims("hsdp", world, HSDP_SHARD).build_mesh("cpu")
        rows += [one_step(mode, accum, defer, rank, world, mesh) for mode, accum, defer in HSDP_CASES]
    (Path(sys.argv[1]) / f"rank{rank}.json").write_text(json.dumps(rows))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
