"""optim.build on models whose parameter names our patterns do not know: roles by module (optim/module_roles.py),
and split rules with an axis that refuse to guess (optim/splits.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import optim
from optim.splits import check_group_splits, split_pieces, split_sizes_for
from tests.helpers import require


class Foreign(nn.Module):
    """Names no pattern knows: a token table, a position table, two linears, a (in, out)-stored weight, a norm and an
    output projection to the vocabulary (tied to the token table or not)."""

    def __init__(self, tie: bool, vocab: int = 20, d: int = 6):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(4, d)
        self.up = nn.Linear(d, 3 * d)
        self.qkv_in_out = nn.Parameter(torch.randn(d, 3 * d) * 0.1)  # stored (in, out), like HF's Conv1D
        self.down = nn.Linear(3 * d, d)
        self.ln = nn.LayerNorm(d)
        self.out = nn.Linear(d, vocab, bias=False)
        if tie:
            self.out.weight = self.tok.weight

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        x = x + self.down(torch.relu(self.up(x)) + x @ self.qkv_in_out)
        return self.out(self.ln(x))


def roles(opt) -> dict[str, str]:
    return {n: g["role"] for g in opt.param_groups for n in g["param_names"]}


@pytest.mark.parametrize("tie", [False, True])
def test_roles_by_module(tie):
    model = Foreign(tie)
    opt = optim.build(model, optim.OptimConfig(name="unconstrained_clipped_scion", lr=1e-3))
    expected = {"tok.weight": "embed", "pos.weight": "embed", "up.weight": "hidden", "up.bias": "vector",
                "qkv_in_out": "hidden", "down.weight": "hidden", "down.bias": "vector", "ln.weight": "vector",
                "ln.bias": "vector"}
    if not tie:
        expected["out.weight"] = "head"  # the last Linear whose out_features is the vocabulary
    assert roles(opt) == expected  # tied: one tensor, the embed role (as our GPT's tied embed.weight)
    text = optim.describe_groups(opt)
    assert "role=head" in text if not tie else "role=head" not in text
    assert "take their role by module" in optim.describe_assignment(
        model, optim.OptimConfig(name="unconstrained_clipped_scion", lr=1e-3))
    idx = torch.randint(0, 20, (2, 4))
    model(idx).square().mean().backward()
    opt.step()


def test_patterns_win_and_unmatched_tensors_take_their_module_role():
    model = Foreign(tie=False)
    cfg = optim.OptimConfig(name="dgclip", lr=0.1, gamma=0.5, delta=0.1)
    cfg.groups.head.patterns = ["up.weight"]  # a pattern overrides the module's role
    assert roles(optim.build(model, cfg))["up.weight"] == "head"
    assert roles(optim.build(model, cfg))["out.weight"] == "head"


def test_a_tensor_without_a_role_by_module_is_named():
    model = Foreign(tie=False)
    model.kernel = nn.Parameter(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match=r"'kernel' matches no optim.groups pattern and has shape \(2, 2, 2\)"):
        optim.build(model, optim.OptimConfig(name="adamw", lr=1e-3))


def test_split_axis_explicit_transpose_aware_or_refused():
    shape = torch.Size([6, 18])  # stored (in, out): 3 pieces along dim 1, but dim 0 also divides by 3
    assert split_sizes_for("w", shape, ["w=3@1"], "k", known_layout=False) == {"dim": 1, "sizes": [6, 6, 6]}
    assert split_sizes_for("w", shape, ["w=3"], "k", transpose=True, known_layout=False) == \
        {"dim": 1, "sizes": [6, 6, 6]}
    assert split_sizes_for("w", shape, ["w=3"], "k", known_layout=True) == [2, 2, 2]  # nn.Linear: (out, in)
    with pytest.raises(ValueError, match=r"could cut 'w' \(shape \(6, 18\)\) along dim 0 or dim 1.*'w=3@1'"):
        split_sizes_for("w", shape, ["w=3"], "k", known_layout=False)
    assert split_sizes_for("w", torch.Size([6, 20]), ["w=3"], "k", known_layout=False) == [2, 2, 2]  # one fits
    with pytest.raises(ValueError, match="bad split rule"):
        split_sizes_for("w", shape, ["w=3@2"], "k")
    with pytest.raises(ValueError, match="dim 1 = 18.*not divisible by 4"):
        split_sizes_for("w", shape, ["w=4@1"], "k")


def test_split_pieces_along_dim_1_and_their_check():
    t = torch.arange(36.0).reshape(2, 18)
    pieces = split_pieces(t, {"dim": 1, "sizes": [6, 6, 6]})
    assert [p.shape for p in pieces] == [torch.Size([2, 6])] * 3 and torch.equal(torch.cat(pieces, 1), t)
    group = {"params": [nn.Parameter(t.clone())], "split_sizes": [{"dim": 1, "sizes": [6, 6, 6]}]}
    check_group_splits(group, "g")
    group["split_sizes"] = [{"dim": 1, "sizes": [6, 6]}]
    with pytest.raises(ValueError, match="do not partition dim 1"):
        check_group_splits(group, "g")


def test_split_along_dim_1_optimizes_each_piece_as_its_own_layer():
    """Muon on a (in, out)-stored fused weight split '@1' equals Muon on the three pieces as separate parameters."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(6, 18))
    pieces = [nn.Parameter(w.detach()[:, i * 6:(i + 1) * 6].clone()) for i in range(3)]
    g = torch.randn(6, 18)
    w.grad = g.clone()
    for i, p in enumerate(pieces):
        p.grad = g[:, i * 6:(i + 1) * 6].clone()
    split = optim.Muon([{"params": [w], "split_sizes": [{"dim": 1, "sizes": [6, 6, 6]}]}], ns_dtype="float32")
    apart = optim.Muon([{"params": pieces}], ns_dtype="float32")
    split.step()
    apart.step()
    assert torch.allclose(w.detach(), torch.cat([p.detach() for p in pieces], 1), atol=1e-6)


def test_hf_gpt2_builds_by_module_and_its_conv1d_split_needs_an_axis():
    transformers = require("transformers")
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_head=2, n_embd=12, vocab_size=30,
                                                                 n_positions=8, bos_token_id=0, eos_token_id=0))
    cfg = optim.OptimConfig(name="unconstrained_clipped_scion", lr=1e-3)
    assert roles(optim.build(model, cfg))["transformer.h.0.attn.c_attn.weight"] == "hidden"  # Conv1D (12, 36)
    cfg.groups.hidden.splits = ["transformer.h.*.attn.c_attn.weight=3"]
    with pytest.raises(ValueError, match="along dim 0 or dim 1"):
        optim.build(model, cfg)
    cfg.groups.hidden.splits = ["transformer.h.*.attn.c_attn.weight=3@1"]
    opt = optim.build(model, cfg)
    assert [s for g in opt.param_groups for s in g["split_sizes"] if s] == [{"dim": 1, "sizes": [12, 12, 12]}]
