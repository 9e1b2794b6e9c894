"""Layers against float64 references: RMSNorm, RoPE, QK-norm attention, the MLP activations."""

import math

import pytest
import torch
import torch.nn.functional as F

from model import ModelConfig
from model.layers import MLP, CausalSelfAttention, RMSNorm, RotaryEmbedding, apply_rotary, rope_tables


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def rms_norm_ref(x, weight, eps):
    """RMSNorm in float64: x / sqrt(mean(x^2) + eps) * g."""
    x = x.double()
    y = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y if weight is None else y * weight.double()


def rope_ref(x, base):
    """RoPE in float64 via complex numbers: pair (x_i, x_{i+D/2}) as z_i, multiplied by exp(i * t * base^(-2i/D))."""
    B, T, H, D = x.shape
    x = x.double()
    z = torch.complex(x[..., : D // 2], x[..., D // 2 :])
    theta = torch.arange(T, dtype=torch.float64)[:, None] * base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    z = z * torch.polar(torch.ones_like(theta), theta)[None, :, None, :]
    return torch.cat((z.real, z.imag), dim=-1)


def causal_attention_ref(q, k, v):
    """softmax(q k^T / sqrt(D) + causal mask) v in float64; q, k, v (B, T, H, D)."""
    q, k, v = (t.double().transpose(1, 2) for t in (q, k, v))
    T = q.shape[-2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2)


@pytest.mark.parametrize("affine", [True, False])
def test_rms_norm_matches_float64(affine):
    norm = RMSNorm(48, eps=1e-5, affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.copy_(torch.randn(48))
    x = 3.0 * torch.randn(4, 7, 48)
    torch.testing.assert_close(norm(x).double(), rms_norm_ref(x, norm.weight, 1e-5), rtol=1e-5, atol=1e-5)
    assert affine == any(True for _ in norm.parameters())


def test_rope_matches_complex_float64_reference():
    x = torch.randn(2, 11, 3, 16, dtype=torch.float64)
    cos, sin = rope_tables(16, 11, 500.0, dtype=torch.float64)
    torch.testing.assert_close(apply_rotary(x, cos, sin), rope_ref(x, 500.0), rtol=1e-12, atol=1e-12)


def test_rope_module_tables_are_fp32_and_not_in_state_dict():
    rope = RotaryEmbedding(8, 32, 10000.0)
    cos, sin = rope(5)
    assert cos.shape == sin.shape == (5, 4) and cos.dtype == torch.float32
    assert rope.state_dict() == {}
    x = torch.randn(1, 5, 2, 8)
    torch.testing.assert_close(apply_rotary(x, cos, sin).double(), rope_ref(x, 10000.0), rtol=1e-5, atol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    """<R_{m+s} q, R_{n+s} k> = <R_m q, R_n k> (RoFormer eq. 16), checked in float64."""
    D, T = 32, 40
    cos, sin = rope_tables(D, T, 10000.0, dtype=torch.float64)
    q = torch.randn(D, dtype=torch.float64)
    k = torch.randn(D, dtype=torch.float64)
    same_q = q.expand(1, T, 1, D)
    same_k = k.expand(1, T, 1, D)
    rq = apply_rotary(same_q, cos, sin)[0, :, 0]  # q placed at every position
    rk = apply_rotary(same_k, cos, sin)[0, :, 0]
    scores = rq @ rk.T  # scores[m, n] = <R_m q, R_n k>
    for m, n, shift in [(5, 2, 7), (3, 9, 20), (0, 0, 39), (10, 4, 25)]:
        torch.testing.assert_close(scores[m + shift, n + shift], scores[m, n], rtol=0, atol=1e-12)
    assert not torch.allclose(scores[5, 2], scores[5, 3])  # it does depend on the offset
    # norms are preserved (a rotation)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm().expand(T), rtol=1e-12, atol=0)


def _attention(qk_norm, head_dim=None):
    cfg = ModelConfig(n_layer=1, n_head=3, n_embd=48, head_dim=head_dim, qk_norm=qk_norm, bias=True).resolved()
    attn = CausalSelfAttention(cfg)
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn_like(p) * (1.0 if p.dim() == 1 else 0.2))
    return cfg, attn


@pytest.mark.parametrize("qk_norm,use_rope,head_dim", [(False, False, None), (True, False, None), (True, True, 10)])
def test_attention_matches_float64_reference(qk_norm, use_rope, head_dim):
    cfg, attn = _attention(qk_norm, head_dim)
    B, T, H, D = 2, 9, cfg.n_head, cfg.head_dim
    x = torch.randn(B, T, cfg.n_embd)
    rope = rope_tables(D, T, cfg.rope_base) if use_rope else None
    out = attn(x, rope)

    xd = x.double()
    q, k, v = (xd @ attn.qkv.weight.double().T + attn.qkv.bias.double()).view(B, T, 3, H, D).unbind(2)
    if qk_norm:
        q = rms_norm_ref(q, attn.q_norm.weight, cfg.norm_eps)
        k = rms_norm_ref(k, attn.k_norm.weight, cfg.norm_eps)
    if use_rope:
        q, k = rope_ref(q, cfg.rope_base), rope_ref(k, cfg.rope_base)
    y = causal_attention_ref(q, k, v).reshape(B, T, H * D)
    ref = y @ attn.proj.weight.double().T + attn.proj.bias.double()
    assert out.shape == (B, T, cfg.n_embd)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


def test_qk_norm_parameters_are_per_head_dim():
    cfg, attn = _attention(True, head_dim=10)
    assert attn.qkv.weight.shape == (3 * 30, 48) and attn.proj.weight.shape == (48, 30)
    assert attn.q_norm.weight.shape == attn.k_norm.weight.shape == (10,)


@pytest.mark.parametrize("kind", ["gelu", "relu2"])
def test_mlp_matches_float64_reference(kind):
    cfg = ModelConfig(n_layer=1, n_head=2, n_embd=16, mlp=kind, mlp_ratio=3).resolved()
    mlp = MLP(cfg)
    x = torch.randn(5, 16)
    h = x.double() @ mlp.fc.weight.double().T + mlp.fc.bias.double()
    h = F.gelu(h) if kind == "gelu" else 2.0 * torch.relu(h) ** 2  # (sqrt(2) relu(x))^2 = 2 relu(x)^2
    ref = h @ mlp.proj.weight.double().T + mlp.proj.bias.double()
    assert mlp.fc.weight.shape == (48, 16)
    torch.testing.assert_close(mlp(x).double(), ref, rtol=1e-5, atol=1e-5)
