"""Run under torchrun (gloo): the whole model compiled under fsdp (blocks, the root's stem and its tail with the
chunked loss), 10 training steps with accumulation 2 and an evaluation every 5; writes rank 0's dynamo counters.

    compile_worker.py OUT_JSON TMP_DIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch._dynamo
import torch.distributed as dist

import optim
from data.loader import ValidationSet
from data.shards import write_shard
from model import GPT, ModelConfig
from optim.config import OptimConfig
from trainer.parallel import wrap_model
from trainer.parallel_dims import ParallelDims
from trainer.passes import evaluate, make_backward

MODEL = dict(n_layer=2, n_head=2, n_embd=16, vocab_size=64, block_size=8, norm="rmsnorm", pos_emb="rope",
             mlp="relu2", qk_norm=True, bias=False)


def main() -> None:
    import faulthandler
    faulthandler.dump_traceback_later(600, exit=True)  # a hang prints every stack
    out, tmp = Path(sys.argv[1]), Path(sys.argv[2])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    raw = GPT(ModelConfig(**MODEL))
    dims = ParallelDims("fsdp", world, world)
    model = wrap_model(raw, dims=dims, mesh=dims.build_mesh("cpu"), device=torch.device("cpu"), dtype="float32",
                       compile=True, compile_backend="eager")
    opt = optim.build(raw, OptimConfig(name="unconstrained_clipped_scion", lr=1e-3, rho=1e4))
    if rank == 0:
        write_shard(tmp / "t_val_000000.bin", np.arange(200) % 64)
    dist.barrier()
    val = ValidationSet([tmp / "t_val_000000.bin"], seq_len=8, num_tokens=5 * 8)  # a padded last batch
    params = [p for p in raw.parameters()]
    gen = torch.Generator().manual_seed(rank)
    counters = torch._dynamo.utils.counters
    graphs = []
    for step in range(1, 11):
        batch = [(torch.randint(0, 64, (2, 8), generator=gen), torch.randint(0, 64, (2, 8), generator=gen))
                 for _ in range(2)]
        loss = make_backward(model, batch, torch.device("cpu"), "float32", params)()
        opt.step()
        if step % 5 == 0:
            evaluate(model, val, rank=rank, world_size=world, micro_batch_size=2, device=torch.device("cpu"),
                     dtype="float32")
        graphs.append(counters["stats"]["unique_graphs"])
    result = {"graphs_per_step": graphs, "graph_breaks": sum(counters["graph_break"].values()),
              "recompiles": sum(counters["recompiles"].values()), "final_loss": float(loss),
              "compiled_parts": [type(raw.stem).__name__, type(raw.tail).__name__]}
    if rank == 0:
        out.write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
