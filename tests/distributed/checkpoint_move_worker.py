"""One hop of a run moving between layouts (one process, ddp, fsdp, hsdp): run under torchrun or alone.

    checkpoint_move_worker.py DUMP_PREFIX [--defer-first] TRAIN_GPT_FLAGS...

Builds the run as train_gpt.py does, resumes from train.out_dir, writes the whole model and optimizer state as
loaded (``DUMP_PREFIX.loaded.pt``), trains to train.stop_after_step with the trainer's own step, saves the checkpoint,
writes the whole state it saved (``DUMP_PREFIX.final.pt``) and each step's values (``DUMP_PREFIX.json``), all on rank
0. ``--defer-first``: the first step runs with train.fsdp_defer_grad_sync=true, the next ones without, and each of
the two reports its own grad_bytes_per_rank (both measured on fresh probes).
"""
from __future__ import annotations

import json
import os
import sys

import torch

import train_gpt
from configs.schema import load_config
from trainer import parallel
from trainer.distributed import init_distributed, shutdown
from trainer.state import train_step


def dump(path: str, state, rank: int) -> None:
    model = parallel.full_model_state(state.raw_model)  # collectives: every rank
    optimizer = parallel.full_optimizer_state(state.optimizer)
    if rank == 0:
        torch.save({"step": state.step, "model": model, "optimizer": optimizer["state"]}, path)


def main() -> None:
    prefix, args = sys.argv[1], sys.argv[2:]
    defer_first = "--defer-first" in args
    args = [a for a in args if a != "--defer-first"]
    cfg = load_config(args)
    cfg.train.fit(int(os.environ.get("WORLD_SIZE", "1")))
    dist = init_distributed(cfg.train.device, cfg.train.dist_timeout_s)
    state, _, regularizer = train_gpt.build(cfg, dist)
    state.resume()
    dump(prefix + ".loaded.pt", state, dist.rank)
    records = []
    last = min(cfg.train.steps, cfg.train.stop_after_step or cfg.train.steps)
    while state.step < last:
        if defer_first:
            cfg.train.fsdp_defer_grad_sync = not records  # the first step of this process only
            state.measure_grad_bytes = len(records) < 2
        values = train_step(state, regularizer)
        records.append({"step": state.step, **values})
    state.save()
    dump(prefix + ".final.pt", state, dist.rank)
    if dist.rank == 0:
        with open(prefix + ".json", "w") as f:
            json.dump(records, f)
    shutdown(True)


if __name__ == "__main__":
    main()
