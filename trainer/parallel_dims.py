"""The run's data-parallel dimensions, decided once from the config and the world size, and the device mesh built
from them (torchtitan's ``ParallelDims`` habit: nothing else reads world sizes to decide a layout).

- ``ddp``: ``world_size`` replicas of the whole model, no mesh (DistributedDataParallel over the default group).
- ``fsdp``: one shard group of all ranks, a 1-D mesh ``("shard",)``.
- ``hsdp``: ``replicate = world_size / shard`` groups of ``shard = train.shard_degree`` ranks each (unset: the
  node's local world size under torchrun, so a group is one node), a 2-D mesh ``("replicate", "shard")`` with the
  ranks of a group consecutive (rank = replica * shard + position). Parameters, gradients and optimizer state are
  sharded within a group and replicated across groups; ``shard == world_size`` is fsdp's 1-D mesh.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from configs.base import ConfigError

MODES = ("ddp", "fsdp", "hsdp")


@dataclass(frozen=True)
class ParallelDims:
    mode: str
    world_size: int
    shard: int  # ranks per shard group (1 under ddp: nothing is sharded)

    @property
    def replicate(self) -> int:
        return self.world_size // self.shard

    @property
    def sharded(self) -> bool:
        """Whether parameters are DTensors (fsdp/hsdp over more than one rank)."""
        return self.mode != "ddp" and self.world_size > 1

    @classmethod
    def from_config(cls, tcfg, world_size: int, local_world_size: int | None = None) -> ParallelDims:
        """The dimensions of ``tcfg`` (a configs.schema.TrainConfig) at ``world_size`` ranks; a ConfigError naming
        train.shard_degree when it does not divide the world size. ``local_world_size`` defaults to torchrun's
        LOCAL_WORLD_SIZE (the ranks of this node)."""
        mode = tcfg.parallel
        if mode not in MODES:
            raise ConfigError(f"train.parallel must be one of {MODES}, got {mode!r}")
        if mode == "ddp":
            return cls(mode, world_size, 1)
        if mode == "fsdp":
            return cls(mode, world_size, world_size)
        shard = tcfg.shard_degree
        if shard is None:
            shard = local_world_size or int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        if world_size % shard:
            given = "train.shard_degree" if tcfg.shard_degree is not None else "the local world size (ranks per node)"
            raise ConfigError(f"train.parallel='hsdp': {given} = {shard} does not divide the world size "
                              f"({world_size}); set train.shard_degree to a divisor of {world_size}")
        return cls(mode, world_size, shard)

    def build_mesh(self, device_type: str):
        """The DeviceMesh handed to ``fully_shard`` (and through the parameters, to the optimizers); None when
        nothing is sharded. Collective: every rank calls it."""
        if not self.sharded:
            return None
        from torch.distributed.device_mesh import init_device_mesh

        if self.mode == "fsdp" or self.replicate == 1:
            return init_device_mesh(device_type, (self.world_size,), mesh_dim_names=("shard",))
        return init_device_mesh(device_type, (self.replicate, self.shard), mesh_dim_names=("replicate", "shard"))

    def describe(self) -> str:
        if self.mode == "hsdp":
            return f"hsdp: {self.replicate} replica(s) x {self.shard} shard(s)"
        return f"{self.mode}: {self.world_size} rank(s)"
