"""ModelConfig: presets, resolution and validation messages."""

import dataclasses
import typing

import pytest

from model import PRESETS, ModelConfig


def test_every_field_has_default_and_help():
    hints = typing.get_type_hints(ModelConfig)
    for f in dataclasses.fields(ModelConfig):
        assert f.name in hints
        assert f.default is not dataclasses.MISSING, f.name
        assert f.metadata.get("help"), f"model.{f.name} has no help text"


def test_preset_fills_only_unset_fields():
    cfg = ModelConfig(preset="gpt2-124m", n_head=6).resolved()
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.head_dim) == (12, 6, 768, 128)
    cfg.validate()


def test_resolved_does_not_mutate_and_fills_head_dim():
    cfg = ModelConfig(preset="gpt2-350m")
    res = cfg.resolved()
    assert cfg.n_layer is None and cfg.head_dim is None
    assert (res.n_layer, res.n_head, res.n_embd, res.head_dim) == (24, 16, 1024, 64)
    assert res.attn_dim == 1024


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate(name):
    ModelConfig(preset=name).validate()


def test_scion_1b_has_head_dim_128():
    assert ModelConfig(preset="scion-1b").resolved().head_dim == 128


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match=r"model\.preset must be one of .*gpt2-124m"):
        ModelConfig(preset="gpt9").validate()


def test_missing_size_without_preset():
    with pytest.raises(ValueError, match=r"model\.n_layer is not set"):
        ModelConfig(n_head=2, n_embd=64).validate()


def test_indivisible_width_names_both_keys():
    with pytest.raises(ValueError, match=r"model\.n_embd \(100\) must be divisible by model\.n_head \(3\)"):
        ModelConfig(n_layer=1, n_head=3, n_embd=100).validate()


def test_explicit_head_dim_decouples_width():
    cfg = ModelConfig(n_layer=1, n_head=3, n_embd=100, head_dim=32)
    cfg.validate()
    assert cfg.resolved().attn_dim == 96


def test_rope_needs_even_head_dim():
    with pytest.raises(ValueError, match=r"model\.head_dim must be even"):
        ModelConfig(n_layer=1, n_head=2, n_embd=64, head_dim=31, pos_emb="rope").validate()
    ModelConfig(n_layer=1, n_head=2, n_embd=64, head_dim=31, pos_emb="learned").validate()


@pytest.mark.parametrize(
    "key,value,pattern",
    [
        ("norm", "batchnorm", r"model\.norm: invalid value 'batchnorm'; valid values are 'layernorm', 'rmsnorm'"),
        ("pos_emb", "alibi", r"model\.pos_emb: .* valid values are 'learned', 'rope'"),
        ("mlp", "swiglu", r"model\.mlp: .* valid values are 'gelu', 'gelu_tanh', 'relu2'"),
        ("proj_init", "xavier", r"model\.proj_init: .* valid values are"),
        ("n_layer", 0, r"model\.n_layer must be >= 1, got 0"),
        ("n_layer", 2.5, r"model\.n_layer: 2\.5 is not a valid int \| None"),
        ("vocab_size", -5, r"model\.vocab_size must be >= 1"),
        ("block_size", 0, r"model\.block_size must be >= 1"),
        ("mlp_ratio", 0, r"model\.mlp_ratio must be >= 1"),
        ("head_dim", 0, r"model\.head_dim must be >= 1"),
        ("dropout", 1.0, r"model\.dropout must be in \[0, 1\)"),
        ("preset", "gpt9", r"model\.preset must be one of \['gpt2-1\.5b'"),
        ("init_std", 0.0, r"model\.init_std must be > 0"),
        ("norm_eps", -1e-5, r"model\.norm_eps must be > 0"),
        ("rope_base", 1.0, r"model\.rope_base must be > 1"),
    ],
)
def test_bad_values_name_the_key(key, value, pattern):
    cfg = dataclasses.replace(ModelConfig(n_layer=2, n_head=2, n_embd=64), **{key: value})
    with pytest.raises(ValueError, match=pattern):
        cfg.validate()
