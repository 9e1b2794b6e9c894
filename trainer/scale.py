"""Memory per rank and bytes received per rank per step, ddp vs fsdp vs hsdp, computed from a model's parameter shapes.

    python -m trainer.scale                          # the docs/scale.md tables (124M-7B at 8/64/512 GPUs, accum 8)
    python -m trainer.scale --accum 1 --gpus 8,16 --gpus-per-node 4 --optimizers adamw

Bytes are what one rank receives per optimizer step, by collective (the usual bus-bytes accounting: a ring all-reduce
of S bytes brings 2(W-1)/W*S into each rank, an all-gather or reduce-scatter of S bytes (W-1)/W*S, an all-to-all
what the other ranks send). tests/distributed/test_comm_accounting.py counts the collectives of real gloo steps at 2
and 4 ranks (ddp and fsdp, accumulation 1 and 4, both fsdp accumulation modes) and checks them against
:func:`step_bytes` byte for byte. Each collective is also classified by its process group: **within-node** when all
its ranks sit on the counted rank's node (ranks r // gpus_per_node equal, torchrun's consecutive placement), else
**across-node**.

Gradient accumulation over ``accum`` micro-batches: ddp all-reduces once per step (``no_sync`` before). fsdp/hsdp
all-gather every block twice per micro-batch (forward, and again in the backward) and the root once; by default they
also reduce-scatter every micro-batch into the sharded gradient (so gradient memory stays 1/shard), with
``train.fsdp_defer_grad_sync=true`` only on the last (fewer bytes, the whole unsharded gradient held meanwhile). hsdp
all-reduces the reduce-scattered shard across replicas once per step.

Memory counts fp32 parameters, gradients and optimizer state (fsdp/hsdp: divided over the shard group, plus the
unsharded working set of about two blocks in the compute dtype and one block's fp32 gradients; with deferred
accumulation the whole unsharded fp32 gradient). Left out: activations (they depend on the micro-batch and
checkpointing), the allocator's fragmentation and communication buffers, the scalar all-reduces of the optimizers
(norms, flags: a few bytes), and latency: the bytes say nothing about how many collectives carry them.
"""
from __future__ import annotations

import argparse
import functools
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
MODES = ("ddp", "fsdp", "hsdp")


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


def _shard_degree(mode: str, world: int, shard_degree: int | None) -> int:
    if mode == "ddp":
        return 1
    if mode == "fsdp":
        return world
    if mode != "hsdp":
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if shard_degree is None or shard_degree < 1 or world % shard_degree:
        raise ValueError(f"hsdp needs a shard_degree dividing the world size {world}, got {shard_degree}")
    return shard_degree


def transfers(model: GPT, world: int, *, mode: str, optimizer: str, accum: int = 1, defer_grad_sync: bool = False,
              shard_degree: int | None = None, param_bytes: int = 2, reduce_bytes: int = 4, ns_bytes: int = 2,
              ns_steps: int = 5, rank: int = 0) -> list[tuple[str, tuple[int, ...], int]]:
    """(collective, ranks of its process group, bytes ``rank`` receives) of one optimizer step; see :func:`step_bytes`.
    """
    if world == 1:
        return []
    frac = (world - 1) / world
    n = sum(p.numel() for p in model.parameters())
    everyone = tuple(range(world))
    out: list[tuple[str, tuple[int, ...], int]] = []
    if mode == "ddp":
        out.append(("all_reduce (gradients)", everyone, round(2 * frac * n * 4)))
        if optimizer in SPECTRAL:  # optim/ns_exchange.py: one all-gather of padded buffers per bucket
            plan = plan_newton_schulz(tuple(spectral_pieces(model, optimizer)), world)
            out.append(("all_gather (Newton-Schulz results)", everyone,
                        sum((world - 1) * b.padded * ns_bytes for b in plan.buckets)))
            for s, team in zip(plan.shapes, plan.teams):
                if len(team) > 1 and rank in team:  # an m x m fp32 all-reduce per iteration
                    k = len(team)
                    out.append(("all_reduce (Newton-Schulz teams)", team,
                                ns_steps * round(2 * (k - 1) / k * wide(s)[0] ** 2 * 4)))
        return out
    shard = _shard_degree(mode, world, shard_degree)
    replicas = world // shard
    group = tuple(range(rank // shard * shard, rank // shard * shard + shard))  # this rank's shard group
    across = tuple(range(rank % shard, world, shard))  # the ranks holding the same shard
    sfrac = (shard - 1) / shard
    groups = shard_groups(model)
    root, blocks = groups[0], groups[1:]
    if shard > 1:
        gathered = padded_numel(root, shard) + 2 * sum(padded_numel(b, shard) for b in blocks)  # blocks again in bwd
        out.append(("all_gather (parameters)", group, round(accum * sfrac * gathered * param_bytes)))
        scatters = 1 if defer_grad_sync else accum
        out.append(("reduce_scatter (gradients)", group,
                    round(scatters * sfrac * sum(padded_numel(g, shard) for g in groups) * reduce_bytes)))
    if replicas > 1:  # the reduce-scattered shard (padded rows / shard), once per step
        shard_numel = sum(padded_numel(g, shard) for g in groups) // shard
        out.append(("all_reduce (gradients across replicas)", across,
                    round(2 * (replicas - 1) / replicas * shard_numel * reduce_bytes)))
    if optimizer in SPECTRAL and shard > 1:  # whole tensors at owners in the shard group and back (lmo_sharded)
        me = rank % shard
        to_owner = from_owner = 0
        exchanged = whole_tensors(model, optimizer)
        owners = assign_owners([tuple(p.shape) for p, _, _ in exchanged], shard)
        for (p, spectral, _), o in zip(exchanged, owners):
            sizes = chunk_sizes(p.shape[0], shard)
            row = math.prod(p.shape[1:])
            if o == me:
                to_owner += sum(s for r, s in enumerate(sizes) if r != me) * row * (ns_bytes if spectral else 4)
            else:
                from_owner += sizes[me] * row * (ns_bytes if spectral else 4)  # NS results in the NS dtype
        out.append(("all_to_all (to owners)", group, to_owner))
        out.append(("all_to_all (from owners)", group, from_owner))
    return out


def step_bytes(model: GPT, world: int, *, mode: str, optimizer: str, accum: int = 1, defer_grad_sync: bool = False,
               shard_degree: int | None = None, param_bytes: int = 2, reduce_bytes: int = 4, ns_bytes: int = 2,
               ns_steps: int = 5, rank: int = 0) -> dict[str, int]:
    """Bytes ``rank`` receives per optimizer step, by collective, for the gradients and the optimizer's exchanges.

    ``mode``: ddp, fsdp or hsdp (``shard_degree`` ranks per shard group); ``accum`` micro-batches per step;
    ``defer_grad_sync``: fsdp/hsdp keep unsharded gradients until the last micro-batch (one reduce-scatter) instead
    of reduce-scattering each; ``param_bytes``: the all-gather dtype (2 for bf16 compute on CUDA, 4 on CPU);
    ``reduce_bytes``: gradient reduction dtype; ``ns_bytes``: the Newton-Schulz dtype of the spectral exchange.
    """
    out: dict[str, int] = {}
    for key, _, value in transfers(model, world, mode=mode, optimizer=optimizer, accum=accum,
                                   defer_grad_sync=defer_grad_sync, shard_degree=shard_degree,
                                   param_bytes=param_bytes, reduce_bytes=reduce_bytes, ns_bytes=ns_bytes,
                                   ns_steps=ns_steps, rank=rank):
        out[key] = out.get(key, 0) + value
    return out


def bytes_by_locality(model: GPT, world: int, *, gpus_per_node: int, rank: int = 0, **kwargs) -> dict[str, int]:
    """{"within-node": bytes, "across-node": bytes} ``rank`` receives per step (kwargs as :func:`step_bytes`): a
    collective is within-node when every rank of its group is on ``rank``'s node."""
    out = {"within-node": 0, "across-node": 0}
    for _, ranks, value in transfers(model, world, rank=rank, **kwargs):
        inside = all(r // gpus_per_node == rank // gpus_per_node for r in ranks)
        out["within-node" if inside else "across-node"] += value
    return out


@functools.lru_cache(maxsize=32)
def _built(model: GPT, optimizer: str):
    import optim
    from optim.config import OptimConfig

    return optim.build(model, OptimConfig(name=optimizer))


def whole_tensors(model: GPT, optimizer: str) -> list[tuple[torch.Tensor, bool, list[int] | None]]:
    """(parameter, is spectral, split sizes) of every tensor the sharded optimizer assembles whole at an owner rank,
    in the order its step visits them: Muon's orthogonalized matrices; for the Scion family every non-sign LMO."""
    from optim.splits import sizes_by_param

    built = _built(model, optimizer)
    if optimizer == "muon":
        chosen = [(g, True) for g in built.param_groups if g["use_muon"]]
    else:
        chosen = [(g, g["norm"] == "spectral") for g in built.param_groups if g["norm"] != "sign"]
    return [(p, spectral, sizes_by_param(g).get(p)) for g, spectral in chosen for p in g["params"]]


def memory_bytes(model: GPT, world: int, *, mode: str, optimizer: str, accum: int = 1, defer_grad_sync: bool = False,
                 shard_degree: int | None = None, compute_bytes: int = 2) -> int:
    """fp32 parameters + gradients + optimizer state per rank (+ fsdp/hsdp's unsharded working set), no activations.
    """
    n = sum(p.numel() for p in model.parameters())
    if optimizer == "muon":
        hidden = sum(p.numel() for name, p in model.named_parameters() if name.startswith("blocks.") and p.ndim == 2)
        state = 4 * hidden + 8 * (n - hidden)
    else:
        state = 4 * STATE_WORDS[optimizer] * n
    if mode == "ddp":
        return 4 * n + 4 * n + state
    shard = _shard_degree(mode, world, shard_degree)
    block = max(sum(p.numel() for p in b.parameters()) for b in model.blocks)
    held_grads = 4 * n if defer_grad_sync and accum > 1 else 4 * block  # unsharded gradients at once
    return (4 * n + 4 * n + state) // shard + 2 * block * compute_bytes + held_grads


LAYOUTS = (  # (column label, mode, defer_grad_sync, hsdp shard degree = gpus per node)
    ("ddp", "ddp", False, False),
    ("fsdp", "fsdp", False, False),
    ("fsdp deferred", "fsdp", True, False),
    ("hsdp", "hsdp", False, True),
)


def _layout_kwargs(mode, defer, hsdp, world, gpus_per_node):
    if hsdp and world <= gpus_per_node:  # one node: hsdp is fsdp
        return None
    return dict(mode=mode, defer_grad_sync=defer, shard_degree=gpus_per_node if hsdp else None)


def tables(gpus=(8, 64, 512), optimizers=("adamw", "muon"), accum: int = 8, gpus_per_node: int = 8) -> str:
    """The markdown tables of docs/scale.md: memory per rank, and bytes per step within / across nodes."""
    labels = [label for label, *_ in LAYOUTS]
    mem = ["| model | params | GPUs | optimizer | " + " | ".join(f"{x} GB/rank" for x in labels) + " |",
           "|---|---|---|---|" + "---|" * len(labels)]
    comm = ["| model | GPUs | optimizer | " + " | ".join(f"{x} GB within / across" for x in labels) + " |",
            "|---|---|---|" + "---|" * len(labels)]
    for name, kwargs in MODELS.items():
        model = build_meta(**kwargs)
        n = sum(p.numel() for p in model.parameters())
        for w in gpus:
            for opt in optimizers:
                mcells, ccells = [], []
                for _, mode, defer, hsdp in LAYOUTS:
                    kw = _layout_kwargs(mode, defer, hsdp, w, gpus_per_node)
                    if kw is None:
                        mcells.append("=fsdp")
                        ccells.append("=fsdp")
                        continue
                    mcells.append(f"{memory_bytes(model, w, optimizer=opt, accum=accum, **kw) / 1e9:.2f}")
                    loc = bytes_by_locality(model, w, gpus_per_node=gpus_per_node, optimizer=opt, accum=accum, **kw)
                    ccells.append(f"{loc['within-node'] / 1e9:.1f} / {loc['across-node'] / 1e9:.1f}")
                mem.append(f"| {name} | {n / 1e9:.2f}B | {w} | {opt} | " + " | ".join(mcells) + " |")
                comm.append(f"| {name} | {w} | {opt} | " + " | ".join(ccells) + " |")
    return "\n".join(mem) + "\n\n" + "\n".join(comm)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", default="8,64,512", help="comma-separated world sizes")
    parser.add_argument("--gpus-per-node", type=int, default=8, help="ranks per node (hsdp's shard degree)")
    parser.add_argument("--accum", type=int, default=8, help="micro-batches per optimizer step")
    parser.add_argument("--optimizers", default="adamw,muon")
    args = parser.parse_args(argv)
    print(tables(tuple(int(g) for g in args.gpus.split(",")), tuple(args.optimizers.split(",")), args.accum,
                 args.gpus_per_node))


if __name__ == "__main__":
    main()
