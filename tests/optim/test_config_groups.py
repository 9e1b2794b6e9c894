"""OptimConfig validation, the registry, and the parameter-group rules."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import optim
from optim import GroupRule, OptimConfig
from optim.groups import resolve_roles


def model(tie=True, bias=True):
    from model import GPT, ModelConfig
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=64, block_size=16, tie_embeddings=tie,
                           bias=bias, qk_norm=True, norm="rmsnorm", pos_emb="rope"))


def test_registry_matches_the_config_literal_and_documents_keys():
    from optim.config import OPTIMIZERS
    assert list(optim.REGISTRY) == list(OPTIMIZERS) == list(optim.OPTIMIZER_NAMES)
    fields = {f.name for f in dataclasses.fields(OptimConfig)}
    for name, entry in optim.REGISTRY.items():
        assert entry.keys == OPTIMIZERS[name].keys and entry.keys <= fields, (name, entry.keys - fields)


def test_optim_config_imports_nothing_else_from_optim():
    """The names/keys table lives in optim/config.py, so the config needs neither the registry nor torch (no
    config <-> registry <-> groups cycle)."""
    import ast
    from pathlib import Path
    tree = ast.parse((Path(optim.__file__).parent / "config.py").read_text())
    imported = {node.module if node.level == 0 else "." * node.level + (node.module or "")
                for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {m for m in imported if m.startswith((".", "optim", "torch"))}, imported


def test_every_field_has_help():
    from optim.config import EmbedRule, HeadRule, HiddenRule, VectorRule
    for cls in (OptimConfig, optim.GRConfig, GroupRule, optim.GroupRules, EmbedRule, HiddenRule, HeadRule, VectorRule):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name}"


def test_unknown_optimizer_lists_the_valid_ones():
    with pytest.raises(ValueError, match="optim.name: invalid value 'lion'; valid values are 'adamw', 'muon'"):
        OptimConfig(name="lion").validate()


def test_key_the_optimizer_does_not_read_is_rejected_with_the_keys_it_reads():
    with pytest.raises(ValueError) as err:
        OptimConfig(name="scion", gamma=2.0, momentum=0.9).validate()
    message = str(err.value)
    assert "optim.momentum" in message and "optim.gamma" in message and "alpha" in message
    OptimConfig(name="dgclip", gamma=2.0, delta=0.01, momentum=0.9).validate()
    OptimConfig(name="clipped_scion", rho=600.0, rho_scaling="reference").validate()
    with pytest.raises(ValueError, match="optim.rho"):
        OptimConfig(name="scion", rho=600.0).validate()


@pytest.mark.parametrize("kw, key", [(dict(lr=-1.0), "optim.lr"), (dict(name="dgclip", delta=1.5), "optim.delta"),
                                     (dict(name="clipped_scion", rho=-1.0), "optim.rho"),
                                     (dict(name="scion", alpha=0.0), "optim.alpha")])
def test_bad_values_name_the_key(kw, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        OptimConfig(**kw).validate()


def test_gr_config_validation():
    with pytest.raises(ValueError, match=r"optim\.gr\.alpha must be in \[0, 1\], got 1\.5"):
        optim.GRConfig(alpha=1.5).validate()
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.GRConfig(warmup="r").validate()


@pytest.mark.parametrize("tie", [True, False])
def test_every_parameter_lands_in_exactly_one_role(tie):
    m = model(tie=tie)
    roles = resolve_roles(list(m.named_parameters()), OptimConfig().groups)
    names = [n for members in roles.values() for n, _ in members]
    assert sorted(names) == sorted(n for n, _ in m.named_parameters())
    assert [n for n, _ in roles["head"]] == ([] if tie else ["head.weight"])
    assert all(p.ndim == 2 for _, p in roles["hidden"]) and all(p.ndim == 1 for _, p in roles["vector"])
    text = optim.describe_assignment(m, OptimConfig(name="clipped_scion"))
    assert "blocks.1.mlp.fc.weight" in text and "norm=spectral radius=50" in text


def test_unmatched_or_doubly_matched_parameter_is_named():
    m = model()
    cfg = OptimConfig()
    cfg.groups.vector.patterns = ["*.bias"]
    with pytest.raises(ValueError, match="'blocks.0.norm1.weight' matches no role"):
        resolve_roles(list(m.named_parameters()), cfg.groups)  # names only: no role by module to fall back on
    by_name = {n: g["role"] for g in optim.build(m, cfg).param_groups for n in g["param_names"]}
    assert by_name["blocks.0.norm1.weight"] == "vector"  # optim.build: unmatched tensors take their module's role
    cfg = OptimConfig()
    cfg.groups.hidden.patterns = ["blocks.*"]
    with pytest.raises(ValueError, match=r"matches several roles \(hidden, vector\)"):
        optim.build(m, cfg)


def test_group_rules_set_lr_weight_decay_and_lmo():
    m = model(tie=False)
    cfg = OptimConfig(name="adamw", lr=0.01, weight_decay=0.1)
    cfg.groups.embed.lr_mult = 0.5
    groups = {g["role"]: g for g in optim.build(m, cfg).param_groups}
    assert groups["embed"]["lr"] == 0.005 and groups["hidden"]["lr"] == 0.01
    assert groups["vector"]["weight_decay"] == 0.0 and groups["head"]["weight_decay"] == 0.1
    scion = optim.build(m, OptimConfig(name="clipped_scion"))
    by_role = {g["role"]: g for g in scion.param_groups}
    assert (by_role["hidden"]["norm"], by_role["hidden"]["radius"]) == ("spectral", 50.0)
    assert (by_role["head"]["norm"], by_role["head"]["radius"]) == ("sign", 3000.0)
    muon = optim.build(m, OptimConfig(name="muon", lr=0.02, adamw_lr=0.003))
    assert {(g["role"], g["use_muon"], g["lr"]) for g in muon.param_groups} == {
        ("hidden", True, 0.02), ("embed", False, 0.003), ("head", False, 0.003), ("vector", False, 0.003)}
    assert "role=hidden" in optim.describe_groups(muon)


def test_group_rule_validation_names_the_role():
    cfg = OptimConfig()
    cfg.groups.head.radius = 0.0
    with pytest.raises(ValueError, match=r"optim\.groups\.head\.radius must be > 0, got 0\.0"):
        cfg.validate()
    cfg = OptimConfig()
    cfg.groups.vector.patterns = []
    with pytest.raises(ValueError, match=r"optim\.groups\.vector\.patterns must be non-empty"):
        cfg.validate()


def test_partial_role_table_keeps_the_role_defaults():
    from configs.base import build_section
    cfg = build_section(OptimConfig, {"name": "clipped_scion", "groups": {"hidden": {"radius": 25.0}}}, "optim")
    assert cfg.groups.hidden.radius == 25.0 and cfg.groups.hidden.norm == "spectral"
    assert cfg.groups.hidden.patterns == OptimConfig().groups.hidden.patterns
    cfg.validate()


def test_step_stats_of_a_plain_torch_optimizer_is_empty():
    p = torch.nn.Parameter(torch.zeros(2))
    assert optim.step_stats(torch.optim.SGD([p], lr=0.1)) == {}


def test_group_header_shows_base_lr_and_only_the_keys_the_optimizer_reads():
    """The run log's group lines: the base LR (not the warmup's step-0 value, nor 0 after a resume at the end of a
    schedule) and no Scion norm/radius or split for AdamW, whose step never reads them."""
    from functools import partial

    from model import GPT, ModelConfig
    from trainer.schedule import lr_multiplier
    m = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=64, block_size=16, bias=True))
    adamw = optim.build(m, OptimConfig(name="adamw", lr=3e-3))
    sched = torch.optim.lr_scheduler.LambdaLR(adamw, partial(lr_multiplier, steps=10, warmup_steps=10,
                                                             warmdown_frac=0.0))
    assert adamw.param_groups[0]["lr"] == pytest.approx(3e-4)  # the warmup's first step
    text = optim.describe_groups(adamw)
    assert "lr = base LR" in text and "role=hidden lr=0.003 weight_decay=0 tensors=" in text
    assert "norm=" not in text and "radius=" not in text and "split=" not in text
    for group in adamw.param_groups:
        group["lr"] = 0.0  # as after a resume at a schedule's end
    assert "lr=0.003" in optim.describe_groups(adamw) and "lr=0 " not in optim.describe_groups(adamw)
    del sched
    scion = optim.describe_groups(optim.build(m, OptimConfig(name="clipped_scion", lr=1e-4)))
    assert "role=hidden lr=0.0001 weight_decay=0 norm=spectral radius=50 split=1 " in scion
    muon = optim.describe_groups(optim.build(m, OptimConfig(name="muon", lr=0.02, adamw_lr=0.003)))
    assert "role=hidden lr=0.02 weight_decay=0 use_muon=True split=1 " in muon
    assert "role=embed lr=0.003 weight_decay=0 use_muon=False tensors=" in muon and "norm=" not in muon
