"""TrainConfig.fit: short runs fit warmup/warmdown in, any world size gets a micro-batch that divides its share."""

from __future__ import annotations

import pytest

from configs.base import ConfigError
from configs.schema import TrainConfig


def fitted(world_size: int, **kw) -> tuple[TrainConfig, list[str]]:
    cfg = TrainConfig(**kw)
    notes = cfg.fit(world_size)
    return cfg, notes


def test_nothing_to_fit_gives_no_warning():
    cfg, notes = fitted(1, steps=200, batch_size=8, micro_batch_size=8, warmup_steps=10, warmdown_frac=0.2)
    assert notes == [] and cfg.micro_batch_size == 8 and cfg.warmup_steps == 10


def test_short_run_warns_once_naming_the_keys():
    cfg, notes = fitted(1, steps=5, batch_size=8, micro_batch_size=8, warmup_steps=10, warmdown_frac=0.2)
    assert len(notes) == 1
    for key in ("train.warmup_steps (10)", "train.warmdown_frac", "train.steps (5)", "over 3 steps, then down over 2"):
        assert key in notes[0]
    assert cfg.warmup_steps == 10  # the config keeps what was asked; the schedule fits it (same on resume)


@pytest.mark.parametrize("batch, micro, world, expected", [
    (8, 8, 1, 8), (8, 8, 2, 4), (8, 8, 4, 2), (8, 8, 8, 1), (16, 8, 2, 8), (12, 8, 1, 6), (12, 8, 2, 6),
    (12, 8, 4, 3), (36, 8, 3, 6), (8, 3, 1, 2), (7, 8, 1, 7)])
def test_largest_dividing_micro_batch(batch, micro, world, expected):
    cfg, notes = fitted(world, batch_size=batch, micro_batch_size=micro)
    assert cfg.micro_batch_size == expected
    assert (batch // world) % cfg.micro_batch_size == 0
    assert len(notes) == (expected != micro and micro < batch // world)  # a micro-batch above the share: no warning
    if notes:
        assert f"train.micro_batch_size ({micro})" in notes[0] and f"world size {world}" in notes[0]


def test_batch_not_a_multiple_of_world_size_names_both_numbers():
    with pytest.raises(ConfigError, match=r"train\.batch_size \(8\) must be a multiple of the world size \(3\)"):
        fitted(3, batch_size=8, micro_batch_size=8)


def test_readme_two_rank_tiny_command_fits_without_a_warning():
    """`torchrun --nproc_per_node=2 train_gpt.py --config configs/tiny.toml`: 4 sequences per rank, micro 8."""
    cfg, notes = fitted(2, batch_size=8, micro_batch_size=8)
    assert notes == [] and cfg.micro_batch_size == 4
