"""Per-optimizer settings tables in presets: `[optim.NAME]` applies when NAME is chosen, under explicit settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from configs.base import ConfigError, to_dict
from configs.schema import load_config
from optim.config import OPTIMIZERS, OptimConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture
def preset(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[model]\nn_layer = 1\nn_head = 2\nn_embd = 32\n[optim]\nname = "adamw"\n[optim.adamw]\nlr = 3e-3\n[optim.sgd]\nlr = 0.3\nmomentum = 0.9\n'
                    '[optim.clipped_scion]\nlr = 3e-4\nrho = 1e4\n[optim.clipped_scion.groups.hidden]\nradius = 25.0\n')
    return str(path)


def test_the_chosen_optimizers_table_applies(preset):
    assert load_config(["--config", preset]).optim.lr == 3e-3
    cfg = load_config(["--config", preset, "--optim.name=sgd"]).optim
    assert (cfg.name, cfg.lr, cfg.momentum) == ("sgd", 0.3, 0.9)
    cfg = load_config(["--config", preset, "--optim.name=clipped_scion"]).optim
    assert (cfg.lr, cfg.rho, cfg.groups.hidden.radius, cfg.groups.hidden.norm) == (3e-4, 1e4, 25.0, "spectral")
    cfg = load_config(["--config", preset, "--optim.name=muon"]).optim  # no table: the schema defaults
    assert cfg.lr == OptimConfig().lr


def test_explicit_settings_win_over_the_table(preset, tmp_path):
    cfg = load_config(["--config", preset, "--optim.name=sgd", "--optim.lr=0.05"]).optim
    assert (cfg.lr, cfg.momentum) == (0.05, 0.9)
    cfg = load_config(["--config", preset, "--optim.name=sgd", "--optim.sgd.momentum=0.5"]).optim  # edits the table
    assert (cfg.lr, cfg.momentum) == (0.3, 0.5)
    child = tmp_path / "child.toml"  # a preset's own [optim] keys are explicit too
    child.write_text('include = ["p.toml"]\n[optim]\nname = "sgd"\nlr = 0.1\n')
    assert load_config(["--config", str(child)]).optim.lr == 0.1


def test_a_table_may_only_set_what_its_optimizer_reads(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[optim.sgd]\nlr = 0.3\nrho = 10.0\n")  # checked even though sgd is not the chosen optimizer
    with pytest.raises(ConfigError, match=r"optim\.sgd\.rho: optimizer 'sgd' does not read 'rho'.*momentum"):
        load_config(["--config", str(path)])
    path.write_text("[optim.sgd]\nlr = -1.0\n")
    with pytest.raises(ConfigError, match=r"optim\.sgd\.lr must be >= 0, got -1\.0"):
        load_config(["--config", str(path)])
    path.write_text("[optim.sgd]\nname = 'adamw'\n")
    with pytest.raises(ConfigError, match=r"optim\.sgd\.name"):
        load_config(["--config", str(path)])
    path.write_text("[optim]\nsgd = 0.3\n")
    with pytest.raises(ConfigError, match=r"optim\.sgd must be a table"):
        load_config(["--config", str(path)])
    with pytest.raises(ConfigError, match=r"optim\.dgclip\.delta must be in \[0, 1\]"):
        load_config(["--optim.dgclip.delta=2"])


def test_optimizer_names_never_shadow_optim_keys():
    assert not set(OPTIMIZERS) & {f.name for f in dataclasses.fields(OptimConfig)}


@pytest.mark.parametrize("preset", ["tiny.toml", "gpt2-124m.toml"])
def test_presets_carry_settings_for_every_optimizer(preset):
    from configs.base import load_toml
    optim_values = load_toml(CONFIGS / preset)["optim"]
    assert "lr" not in optim_values  # a preset-wide lr would override every table
    for name in OPTIMIZERS:
        assert "lr" in optim_values.get(name, {}), f"{preset} has no [optim.{name}] lr"
        cfg = load_config(["--config", str(CONFIGS / preset), f"--optim.name={name}"])
        assert cfg.optim.name == name and cfg.optim.lr == optim_values[name]["lr"]


@pytest.mark.parametrize("recipe", sorted((CONFIGS / "recipes").glob("*.toml")), ids=lambda p: p.name)
def test_gpt2_tables_agree_with_the_paper_recipes(recipe):
    """`--optim.name=X` on gpt2-124m.toml (gpt2-1b.toml for the 1B recipes) gives the settings of X's recipe."""
    from_recipe = load_config(["--config", str(recipe)])
    base = "gpt2-1b.toml" if recipe.stem.endswith("-1b") else "gpt2-124m.toml"
    by_name = load_config(["--config", str(CONFIGS / base), f"--optim.name={from_recipe.optim.name}"])
    assert to_dict(by_name.optim) == to_dict(from_recipe.optim)


def test_compare_on_tiny_needs_no_set_for_learning_rates(tmp_path):
    """`experiments.compare --optims a,b,c` resolves each run's config with that optimizer's table."""
    from configs.base import load_toml
    from experiments.compare import build_specs
    from experiments.launch import resolve

    tables = load_toml(CONFIGS / "tiny.toml")["optim"]
    specs = build_specs(["adamw", "sgd", "unconstrained_clipped_scion", "sgd@slow"], ["sgd@slow:optim.lr=0.01"],
                        ["--train.steps=10"], tmp_path)
    configs = {spec.name: resolve(spec, str(CONFIGS / "tiny.toml")).optim for spec in specs}
    assert configs["adamw"].lr == tables["adamw"]["lr"] and configs["sgd"].momentum == 0.9
    assert (configs["unconstrained_clipped_scion"].lr, configs["unconstrained_clipped_scion"].rho) == (3e-4, 1e4)
    assert (configs["sgd-slow"].lr, configs["sgd-slow"].momentum) == (0.01, 0.9)  # --set wins over the table
