"""trainer.parallel_dims: the layout decided once from the config and world size; hsdp's shard degree defaults to
the node's local world size and is refused, naming the key, when it does not divide the world size."""
from __future__ import annotations

import pytest

from configs.base import ConfigError
from configs.schema import load_config as load_flags
from tests.helpers import TINY
from trainer.parallel_dims import ParallelDims


def load_config(flags: list[str]):
    return load_flags(["--config", TINY, *flags])


def dims(*flags: str, world: int, local: int | None = None) -> ParallelDims:
    return ParallelDims.from_config(load_config(list(flags)).train, world, local)


def test_modes_and_degrees():
    assert (dims(world=8).shard, dims(world=8).replicate, dims(world=8).sharded) == (1, 8, False)
    fsdp = dims("--train.parallel=fsdp", world=8)
    assert (fsdp.shard, fsdp.replicate, fsdp.sharded) == (8, 1, True)
    hsdp = dims("--train.parallel=hsdp", "--train.shard_degree=4", world=16)
    assert (hsdp.shard, hsdp.replicate) == (4, 4)
    assert hsdp.describe() == "hsdp: 4 replica(s) x 4 shard(s)"
    assert not dims("--train.parallel=hsdp", world=1, local=1).sharded  # one process: nothing to shard


def test_shard_degree_defaults_to_the_local_world_size(monkeypatch):
    assert dims("--train.parallel=hsdp", world=16, local=8).shard == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert dims("--train.parallel=hsdp", world=8).replicate == 2


def test_shard_degree_that_does_not_divide_is_refused():
    with pytest.raises(ConfigError, match=r"train.shard_degree = 3 does not divide the world size \(8\)"):
        dims("--train.parallel=hsdp", "--train.shard_degree=3", world=8)
    with pytest.raises(ConfigError, match="the local world size"):
        dims("--train.parallel=hsdp", world=6, local=4)


def test_hsdp_keys_are_refused_with_other_modes():
    with pytest.raises(ConfigError, match="train.shard_degree=2 sets the shard groups"):
        load_config(["--train.parallel=fsdp", "--train.shard_degree=2"])
    with pytest.raises(ConfigError, match="train.fsdp_defer_grad_sync applies to"):
        load_config(["--train.fsdp_defer_grad_sync=true"])
    with pytest.raises(ConfigError, match="train.consistency_check_every"):
        load_config(["--train.parallel=hsdp", "--train.consistency_check_every=10"])


def test_trainer_refuses_before_starting(tmp_path, monkeypatch, capsys):
    import train_gpt
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert train_gpt.main(["--config", TINY, "--train.parallel=hsdp", "--train.shard_degree=3",
                           f"--train.out_dir={tmp_path}"]) == 2
    assert "train.shard_degree = 3 does not divide the world size (4)" in capsys.readouterr().err
