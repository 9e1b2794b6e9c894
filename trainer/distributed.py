"""Process-group setup from torchrun's environment, and the few collectives the trainer needs."""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from optim.sharding import is_sharded


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str) -> str:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device='cuda' but CUDA is not available; use train.device='auto' or 'cpu'")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def _generation_store(timeout: timedelta) -> tuple[dist.Store, int, int]:
    """The rendezvous store of torchrun's environment, prefixed by the restart generation.

    Under ``torchrun --max-restarts=N`` the restarted workers meet in the same store as the generation
    that died; without the prefix they read its stale keys (gloo's peer addresses) and wait forever.
    """
    store, rank, world_size = next(dist.rendezvous("env://", timeout=timeout))
    generation = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"clipgpt/generation{generation}/", store), rank, world_size


def init_distributed(requested_device: str, timeout_s: float = 600.0) -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK); NCCL on CUDA, gloo on CPU.

    Without torchrun's variables this is a single process and no group is created. Collectives that
    wait longer than ``timeout_s`` for a peer raise instead of hanging (train.dist_timeout_s). Under torchrun the
    worker ends itself when its agent dies (:func:`watch_parent`).
    """
    kind = pick_device(requested_device)
    if "RANK" not in os.environ:
        return DistInfo(0, 0, 1, torch.device(kind))
    watch_parent()  # a worker whose torchrun died stops within a second (and releases the run lock)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    timeout = timedelta(seconds=timeout_s)
    store, rank, world_size = _generation_store(timeout)
    if kind == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device, store=store, rank=rank, world_size=world_size,
                                timeout=timeout)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=timeout)
    return DistInfo(rank, local_rank, world_size, device)


def watch_parent(poll_s: float = 1.0, exit_code: int = 1) -> threading.Thread | None:
    """Under torchrun, end this worker within ``poll_s`` seconds of its agent's death (e.g. ``kill -9`` of torchrun).

    A worker whose agent is gone is unsupervised: nobody restarts or stops it, and rank 0 would keep holding the
    run directory's lock, so re-running the same command would be refused until it finished. A daemon thread
    compares ``os.getppid()`` with the agent's pid (a dead parent's children are re-parented) and, when they differ,
    prints one line and leaves with ``os._exit`` (the main thread may be blocked in a collective whose peer is gone;
    the kernel then drops the flock, and the atomic checkpoint writes leave at most a temporary file).
    Without torchrun (no ``TORCHELASTIC_RUN_ID``) nothing is watched."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    launcher = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(poll_s)
        rank = os.environ.get("RANK", "?")
        print(f"rank {rank}: error: the torchrun launcher (pid {launcher}) that started this worker died; stopping so the "
              f"run directory's lock is released. Re-run the same command to resume from the newest checkpoint",
              file=sys.stderr, flush=True)
        os._exit(exit_code)

    thread = threading.Thread(target=watch, name="watch-torchrun-launcher", daemon=True)
    thread.start()
    return thread


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


_WORDS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def parameter_checksum(params: list[torch.Tensor]) -> torch.Tensor:
    """An exact fingerprint of the parameters' bits: the int64 sum of their words (any flipped bit changes it).
    Sharded (FSDP) parameters differ across ranks by design and are left out."""
    total = torch.zeros((), dtype=torch.int64, device=params[0].device if params else "cpu")
    for p in (p for p in params if not is_sharded(p)):
        data = p.detach().contiguous().view(-1)
        total += data.view(_WORDS[data.element_size()]).sum(dtype=torch.int64)
    return total


class ConsistencyError(RuntimeError):
    """Ranks hold different parameters although DDP keeps them identical (a hardware or software fault)."""


def check_consistency(params: list[torch.Tensor], step: int) -> None:
    """Compare every rank's parameter checksum with rank 0's (one small all-gather); raise naming the ranks."""
    if not dist.is_initialized():
        return
    mine = parameter_checksum(params).reshape(1)
    everyone = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine)
    values = [int(v) for v in torch.cat(everyone).tolist()]
    differ = [r for r, v in enumerate(values) if v != values[0]]
    if differ:
        raise ConsistencyError(f"step {step}: the parameters of rank(s) {', '.join(map(str, differ))} differ from "
                               f"rank 0's (checksums {values}); the ranks have diverged. Stopping: resume from "
                               f"the last checkpoint and check the machines of those ranks")


def all_gather_objects(obj) -> list:
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


_PEER_FAULTS = ("timed out", "connection closed by peer", "connection reset by peer", "broken pipe")


def peer_failure(err: BaseException) -> bool:
    """Whether ``err`` is a collective that failed because another rank died, stalled or lost its network."""
    dist_error = getattr(dist, "DistError", ())
    return (isinstance(err, dist_error) if dist_error else False) or (
        isinstance(err, RuntimeError) and any(s in str(err).lower() for s in _PEER_FAULTS))


def shutdown(clean: bool = True) -> None:
    """Leave the process group. After a clean run all ranks first meet at a barrier, so no rank tears down
    its communicator while a peer still uses it (a cause of SIGABRT at exit); after an error, no barrier."""
    if not dist.is_initialized():
        return
    if clean:
        try:
            dist.barrier()
        except RuntimeError:
            pass
    dist.destroy_process_group()
