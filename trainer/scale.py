"""Memory per rank and bytes received per rank per step, ddp vs fsdp, computed from a model's parameter shapes.

    python -m trainer.scale                      # the docs/scale.md table (124M, 1B, 3B, 7B at 8/16/64 GPUs)

The byte counts are the ones a rank receives per optimizer step (the usual bus-bytes accounting: a ring all-reduce of
S bytes moves 2(W-1)/W*S into each rank, an all-gather or reduce-scatter of S bytes (W-1)/W*S, a broadcast S to every
rank but the source, an all-to-all what the other ranks send). tests/distributed/test_comm_accounting.py counts the
collectives of real gloo steps at 2 and 4 ranks and checks them against :func:`step_bytes`.

Memory counts fp32 parameters, gradients and optimizer state (fsdp: divided over the ranks, plus the unsharded
working set of about two blocks in the compute dtype and one block's fp32 gradients); activations come on top and
depend on the micro-batch and activation checkpointing.
"""
from __future__ import annotations

import argparse
import math

import torch

from model import GPT, ModelConfig
from optim.ns_plan import plan_newton_schulz, wide
from optim.sharding import assign_owners, chunk_sizes

# Optimizer state in fp32 words per parameter (momentum / moments), and whether it orthogonalizes hidden matrices.
STATE_WORDS = {"adamw": 2, "muon": None, "dgclip": 0, "clipped_scion": 1, "unconstrained_clipped_scion": 1}
SPECTRAL = {"muon", "clipped_scion", "unconstrained_clipped_scion", "scion", "unconstrained_scion"}
MODELS = {  # name: ModelConfig kwargs (3B and 7B: GPT-2 blocks at the widths of common 3B / 7B models)
    "124M": dict(preset="gpt2-124m"),
    "1B": dict(preset="scion-1b", n_head=20),
    "3B": dict(n_layer=36, n_head=20, n_embd=2560),
    "7B": dict(n_layer=32, n_head=32, n_embd=4096),
}


def build_meta(**kwargs) -> GPT:
    """The GPT on the meta device: shapes only, no memory."""
    with torch.device("meta"):
        return GPT(ModelConfig(**kwargs))


def shard_groups(model: GPT) -> list[list[torch.Tensor]]:
    """The parameters of each fully_shard group: the root (embeddings, final norm, head) first, then each block."""
    in_blocks = {id(p) for block in model.blocks for p in block.parameters()}
    root = [p for p in model.parameters() if id(p) not in in_blocks]
    return [root] + [list(block.parameters()) for block in model.blocks]


def padded_numel(params: list[torch.Tensor], world: int) -> int:
    """Elements of a group's all-gather output: each parameter's dim 0 padded to a multiple of the world size."""
    return sum(math.ceil(p.shape[0] / world) * world * math.prod(p.shape[1:]) for p in params)


def spectral_pieces(model: GPT, optimizer: str) -> list[tuple[int, ...]]:
    """Shapes of the matrices the spectral LMO / Muon orthogonalizes, in step order: each piece of a split parameter
    (q, k, v of a fused qkv, from the groups' split sizes) on its own."""
    return [(n, *p.shape[1:]) for p, spectral, sizes in whole_tensors(model, optimizer) if spectral
            for n in (sizes or [p.shape[0]])]


def step_bytes(model: GPT, world: int, *, mode: str, optimizer: str, accum: int = 1, param_bytes: int = 2,
               reduce_bytes: int = 4, ns_bytes: int = 2, ns_steps: int = 5, rank: int = 0) -> dict[str, int]:
    """Bytes ``rank`` receives per optimizer step, by collective, for the gradients and the optimizer's exchanges.

    ``param_bytes``: the fsdp all-gather dtype (2 for bf16 compute on CUDA, 4 on CPU); ``reduce_bytes``: gradient
    reduction dtype; ``ns_bytes``: the Newton-Schulz dtype of the spectral exchange.
    """
    if world == 1:
        return {}
    frac = (world - 1) / world
    n = sum(p.numel() for p in model.parameters())
    out: dict[str, int] = {}
    if mode == "ddp":
        out["all_reduce (gradients)"] = round(2 * frac * n * 4)
        if optimizer in SPECTRAL:  # optim/ns_exchange.py: one all-gather of padded buffers per bucket
            plan = plan_newton_schulz(tuple(spectral_pieces(model, optimizer)), world)
            out["all_gather (Newton-Schulz results)"] = sum((world - 1) * b.padded * ns_bytes for b in plan.buckets)
            teams = sum(ns_steps * round(2 * (len(t) - 1) / len(t) * wide(s)[0] ** 2 * 4)
                        for s, t in zip(plan.shapes, plan.teams) if len(t) > 1 and rank in t)
            if teams:
                out["all_reduce (Newton-Schulz teams)"] = teams
        return out
    groups = shard_groups(model)
    root, blocks = groups[0], groups[1:]
    gathered = padded_numel(root, world) + 2 * sum(padded_numel(b, world) for b in blocks)  # blocks again in bwd
    out["all_gather (parameters)"] = round(accum * frac * gathered * param_bytes)
    out["reduce_scatter (gradients)"] = round(frac * sum(padded_numel(g, world) for g in groups) * reduce_bytes)
    if optimizer in SPECTRAL:  # whole tensors at their owners and back (optim/lmo_sharded.py)
        to_owner = from_owner = 0
        exchanged = whole_tensors(model, optimizer)
        owners = assign_owners([tuple(p.shape) for p, _, _ in exchanged], world)
        for (p, spectral, _), o in zip(exchanged, owners):
            sizes = chunk_sizes(p.shape[0], world)
            row = math.prod(p.shape[1:])
            if o == rank:
                to_owner += sum(s for r, s in enumerate(sizes) if r != rank) * row * (ns_bytes if spectral else 4)
            else:
                from_owner += sizes[rank] * row * 4
        out["all_to_all (to owners)"] = to_owner
        out["all_to_all (from owners)"] = from_owner
    return out


def whole_tensors(model: GPT, optimizer: str) -> list[tuple[torch.Tensor, bool, list[int] | None]]:
    """(parameter, is spectral, split sizes) of every tensor the sharded optimizer assembles whole at an owner rank,
    in the order its step visits them: Muon's orthogonalized matrices; for the Scion family every non-sign LMO."""
    import optim
    from optim.config import OptimConfig
    from optim.splits import sizes_by_param

    built = optim.build(model, OptimConfig(name=optimizer))
    if optimizer == "muon":
        chosen = [(g, True) for g in built.param_groups if g["use_muon"]]
    else:
        chosen = [(g, g["norm"] == "spectral") for g in built.param_groups if g["norm"] != "sign"]
    return [(p, spectral, sizes_by_param(g).get(p)) for g, spectral in chosen for p in g["params"]]


def memory_bytes(model: GPT, world: int, *, mode: str, optimizer: str, compute_bytes: int = 2) -> int:
    """fp32 parameters + gradients + optimizer state per rank (+ fsdp's unsharded working set), no activations."""
    n = sum(p.numel() for p in model.parameters())
    if optimizer == "muon":
        hidden = sum(p.numel() for name, p in model.named_parameters() if name.startswith("blocks.") and p.ndim == 2)
        state = 4 * hidden + 8 * (n - hidden)
    else:
        state = 4 * STATE_WORDS[optimizer] * n
    total = 4 * n + 4 * n + state
    if mode == "ddp":
        return total
    block = max(sum(p.numel() for p in b.parameters()) for b in model.blocks)
    return total // world + 2 * block * compute_bytes + 4 * block


def table(gpus=(8, 16, 64), optimizers=("adamw", "unconstrained_clipped_scion", "muon")) -> str:
    """The markdown table of docs/scale.md."""
    lines = ["| model | params | GPUs | optimizer | ddp GB/rank | fsdp GB/rank | ddp GB recv/step | "
             "fsdp GB recv/step |", "|---|---|---|---|---|---|---|---|"]
    for name, kwargs in MODELS.items():
        model = build_meta(**kwargs)
        n = sum(p.numel() for p in model.parameters())
        for w in gpus:
            for opt in optimizers:
                mem = [memory_bytes(model, w, mode=m, optimizer=opt) / 1e9 for m in ("ddp", "fsdp")]
                comm = [sum(step_bytes(model, w, mode=m, optimizer=opt).values()) / 1e9 for m in ("ddp", "fsdp")]
                lines.append(f"| {name} | {n / 1e9:.2f}B | {w} | {opt} | {mem[0]:.1f} | {mem[1]:.2f} | "
                             f"{comm[0]:.2f} | {comm[1]:.2f} |")
    return "\n".join(lines)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    print(table())


if __name__ == "__main__":
    main()
