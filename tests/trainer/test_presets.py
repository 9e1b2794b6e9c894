"""Every TOML preset loads and validates; the README's configuration reference matches the schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs.base import ConfigError
from configs.reference import README, markdown, readme_block
from configs.schema import load_config

CONFIGS = Path(__file__).resolve().parent.parent.parent / "configs"
PRESETS = sorted(CONFIGS.glob("*.toml")) + sorted(CONFIGS.glob("recipes/*.toml"))


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_preset_loads(path):
    cfg = load_config(["--config", str(path)])
    assert cfg.train.steps > 0


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("recipes/*scion*.toml")), ids=lambda p: p.name)
def test_scion_recipes_start_from_the_reference_init(path):
    """The Scion code zero-initializes the residual output projections and orthogonalizes q, k, v separately."""
    cfg = load_config(["--config", str(path)])
    assert cfg.model.proj_init == "zero"
    assert "blocks.*.attn.qkv.weight=3" in cfg.optim.groups.hidden.splits


def test_required_keys_and_presets_exist():
    names = {p.name for p in PRESETS}
    assert {"tiny.toml", "gpt2-124m.toml", "gpt2-1b.toml"} <= names
    cfg = load_config(["--config", str(CONFIGS / "gpt2-124m.toml")])
    assert cfg.train.batch_size * cfg.model.block_size == 512 * 1024 and cfg.train.steps == 5100
    for key in ("optim.name", "train.steps", "train.out_dir", "train.checkpoint_every"):
        section, name = key.split(".")
        assert hasattr(getattr(cfg, section), name)


def test_tiny_overrides_from_cli():
    cfg = load_config(["--config", str(CONFIGS / "tiny.toml"), "--train.steps=50", "--optim.name=adamw"])
    assert cfg.train.steps == 50 and cfg.optim.name == "adamw" and cfg.data.dir == "embedded"


def test_cross_section_errors_name_the_key():
    cfg = load_config(["--config", str(CONFIGS / "tiny.toml"), "--train.batch_size=20", "--train.micro_batch_size=8"])
    assert cfg.train.fit(world_size=1) and cfg.train.micro_batch_size == 5  # fitted with a warning, not refused
    with pytest.raises(ConfigError, match=r"train\.batch_size \(20\).*world size \(3\)"):
        cfg.train.fit(world_size=3)
    with pytest.raises(ConfigError, match="model.vocab_size"):
        load_config(["--config", str(CONFIGS / "tiny.toml"), "--model.vocab_size=1000"])


def test_readme_reference_is_generated_from_the_schema():
    table = markdown()
    assert readme_block(README.read_text()) == table, "run: python -m configs.reference --write"
    for key in ("optim.name", "train.steps", "train.out_dir", "train.checkpoint_every", "model.n_layer",
                "data.dir", "log.wandb"):
        assert f"`{key}`" in table
