"""GPT: contract parameter names, shapes, causality, init, parameter counts, FLOPs, training, autocast, compile."""

import itertools
import math
import time

import pytest
import torch

from model import GPT, PRESETS, ModelConfig

TINY = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=96, block_size=16)
OPTIONS = dict(
    norm=["layernorm", "rmsnorm"],
    pos_emb=["learned", "rope"],
    mlp=["gelu", "relu2"],
    qk_norm=[False, True],
    tie_embeddings=[True, False],
    bias=[True, False],
    norm_affine=[True, False],
)
ALL_COMBOS = [dict(zip(OPTIONS, values)) for values in itertools.product(*OPTIONS.values())]
MODERN = dict(norm="rmsnorm", pos_emb="rope", mlp="relu2", qk_norm=True, tie_embeddings=False, bias=False)


def tiny(**overrides):
    torch.manual_seed(0)
    return GPT(ModelConfig(**{**TINY, **overrides}))


def contract_names(cfg: ModelConfig) -> dict[str, tuple]:
    """Parameter names and shapes as GPT's docstring lists them, derived from the config alone."""
    cfg = cfg.resolved()
    d, V, a, h = cfg.n_embd, cfg.vocab_size, cfg.n_head * cfg.head_dim, cfg.mlp_ratio * cfg.n_embd
    names = {"embed.weight": (V, d)}
    if cfg.pos_emb == "learned":
        names["pos_embed.weight"] = (cfg.block_size, d)
    norm_bias = cfg.norm == "layernorm" and cfg.bias and cfg.norm_affine

    def norm(prefix, dim):
        if cfg.norm_affine:
            names[f"{prefix}.weight"] = (dim,)
        if norm_bias:
            names[f"{prefix}.bias"] = (dim,)

    def linear(prefix, d_out, d_in):
        names[f"{prefix}.weight"] = (d_out, d_in)
        if cfg.bias:
            names[f"{prefix}.bias"] = (d_out,)

    for i in range(cfg.n_layer):
        b = f"blocks.{i}"
        norm(f"{b}.norm1", d)
        linear(f"{b}.attn.qkv", 3 * a, d)
        linear(f"{b}.attn.proj", d, a)
        if cfg.qk_norm and cfg.norm_affine:
            names[f"{b}.attn.q_norm.weight"] = (cfg.head_dim,)
            names[f"{b}.attn.k_norm.weight"] = (cfg.head_dim,)
        norm(f"{b}.norm2", d)
        linear(f"{b}.mlp.fc", h, d)
        linear(f"{b}.mlp.proj", d, h)
    norm("final_norm", d)
    if not cfg.tie_embeddings:
        names["head.weight"] = (V, d)
    return names


@pytest.mark.parametrize("options", ALL_COMBOS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_parameter_names_match_contract_and_forward_shapes(options):
    model = tiny(**options)
    got = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert got == contract_names(model.config)
    idx = torch.randint(0, TINY["vocab_size"], (2, 7))
    logits, loss = model(idx)
    assert logits.shape == (2, 7, TINY["vocab_size"]) and logits.dtype == torch.float32 and loss is None
    logits, loss = model(idx, idx)
    assert loss.dim() == 0 and loss.dtype == torch.float32 and torch.isfinite(loss)


def test_tied_head_is_the_embedding():
    model = tiny(tie_embeddings=True)
    assert model.head.weight is model.embed.weight
    names = [n for n, _ in model.named_parameters()]
    assert "embed.weight" in names and "head.weight" not in names
    untied = tiny(tie_embeddings=False)
    assert untied.head.weight is not untied.embed.weight
    assert untied.head.weight.data_ptr() != untied.embed.weight.data_ptr()


def test_head_dim_decoupled_from_width():
    model = tiny(n_head=3, head_dim=8)
    assert model.blocks[0].attn.qkv.weight.shape == (72, 32)
    assert model.blocks[0].attn.proj.weight.shape == (32, 24)
    assert model(torch.randint(0, 96, (1, 5)))[0].shape == (1, 5, 96)


@pytest.mark.parametrize("options", [{}, MODERN], ids=["classic", "modern"])
def test_causality_future_tokens_do_not_change_past_logits(options):
    model = tiny(**options).eval()
    idx = torch.randint(0, 96, (2, 12))
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1 + torch.randint(0, 90, (2, 4))) % 96
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


@pytest.mark.parametrize("options", [{}, MODERN], ids=["classic", "modern"])
def test_loss_at_init_is_about_log_vocab(options):
    model = tiny(**{**options, "vocab_size": 1024, "n_embd": 64})
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 1024, (8, 16), generator=g)
    targets = torch.randint(0, 1024, (8, 16), generator=g)
    with torch.no_grad():
        _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(1024)) < 0.25


def test_ignore_index_is_left_out_of_the_loss():
    model = tiny().eval()
    idx = torch.randint(0, 96, (1, 8))
    targets = torch.randint(0, 96, (1, 8))
    masked = targets.clone()
    masked[:, 4:] = -1
    with torch.no_grad():
        logits, loss = model(idx, masked)
    ref = torch.nn.functional.cross_entropy(logits[0, :4].double(), targets[0, :4])
    torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=1e-6)


def test_init_statistics():
    """N(0, 0.02) weights, residual projections 0.02/sqrt(2 n_layer), unit norm gains, zero biases."""
    model = tiny(n_layer=8, n_embd=256, n_head=4, vocab_size=512)
    std = lambda t: t.float().std().item()
    assert std(model.embed.weight) == pytest.approx(0.02, rel=0.05)
    assert std(model.blocks[3].mlp.fc.weight) == pytest.approx(0.02, rel=0.05)
    for proj in (model.blocks[3].attn.proj.weight, model.blocks[5].mlp.proj.weight):
        assert std(proj) == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert torch.all(model.blocks[0].norm1.weight == 1) and torch.all(model.final_norm.bias == 0)
    assert torch.all(model.blocks[0].attn.qkv.bias == 0)
    zero = tiny(proj_init="zero")
    assert torch.all(zero.blocks[1].attn.proj.weight == 0) and torch.all(zero.blocks[1].mlp.proj.weight == 0)


def _meta_model(**kwargs) -> GPT:
    with torch.device("meta"):
        return GPT(ModelConfig(**kwargs))


def test_gpt2_124m_parameter_count():
    """The published GPT-2 small count: 124,439,808 (vocab 50257, block 1024, tied head)."""
    model = _meta_model(preset="gpt2-124m", vocab_size=50257)
    assert model.num_params(non_embedding=False) == 124_439_808
    assert model.num_params() == 124_439_808 - 50257 * 768 - 1024 * 768


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_counts(name):
    L, H, d = (PRESETS[name][k] for k in ("n_layer", "n_head", "n_embd"))
    V, T = 50304, 1024
    classic = _meta_model(preset=name)
    assert classic.num_params(non_embedding=False) == V * d + T * d + L * (12 * d * d + 13 * d) + 2 * d
    scion = _meta_model(preset=name, norm="rmsnorm", norm_affine=False, pos_emb="rope", mlp="relu2", bias=False)
    assert scion.num_params(non_embedding=False) == V * d + L * 12 * d * d
    untied = _meta_model(preset=name, tie_embeddings=False)
    assert untied.num_params(non_embedding=False) == classic.num_params(non_embedding=False) + V * d
    assert untied.num_params() == classic.num_params()


def test_preset_sizes_span_124m_to_1_5b():
    totals = {name: _meta_model(preset=name).num_params(non_embedding=False) for name in PRESETS}
    assert 120e6 < totals["gpt2-124m"] < 130e6
    assert 340e6 < totals["gpt2-350m"] < 360e6
    assert 760e6 < totals["gpt2-774m"] < 780e6
    assert 1.5e9 < totals["gpt2-1.5b"] < 1.6e9
    assert 1.0e9 < totals["scion-1b"] < 1.1e9


def test_flops_per_token_formula():
    model = _meta_model(preset="gpt2-124m", n_head=6)  # head dim 128: attention term unchanged by the split
    N = model.num_params()
    assert model.flops_per_token() == 6 * (N + 50304 * 768) + 12 * 12 * 768 * 1024
    assert model.flops_per_token(seq_len=512) == 6 * (N + 50304 * 768) + 12 * 12 * 768 * 512
    assert _meta_model(preset="gpt2-124m", tie_embeddings=False).flops_per_token() == model.flops_per_token()


def test_rejects_bad_input_shapes():
    model = tiny()
    with pytest.raises(ValueError, match="exceeds model.block_size 16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"idx must have shape \(batch, seq_len\)"):
        model(torch.zeros(17, dtype=torch.long))
    with pytest.raises(ValueError, match="targets shape"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long))


def test_invalid_config_is_rejected_at_construction():
    with pytest.raises(ValueError, match=r"model\.n_embd \(30\) must be divisible by model\.n_head \(4\)"):
        GPT(ModelConfig(n_layer=1, n_head=4, n_embd=30))


def test_dropout_is_active_only_in_training():
    model = tiny(dropout=0.5)
    idx = torch.randint(0, 96, (2, 8))
    model.train()
    assert not torch.allclose(model(idx)[0], model(idx)[0])
    model.eval()
    torch.testing.assert_close(model(idx)[0], model(idx)[0], rtol=0, atol=0)


@pytest.mark.parametrize("options", [{}, MODERN], ids=["classic", "modern"])
def test_sgd_steps_reduce_loss_on_a_fixed_batch(options):
    model = tiny(**options)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(0, 96, (4, 16), generator=g)
    targets = torch.randint(0, 96, (4, 16), generator=g)
    losses = []
    for _ in range(10):
        _, loss = model(idx, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses


@pytest.mark.filterwarnings("error::UserWarning")  # e.g. rms_norm's "Mismatch dtype ... Cannot dispatch to fused"
@pytest.mark.parametrize("options", [{}, MODERN], ids=["classic", "modern"])
def test_works_under_bf16_autocast_on_cpu(options):
    model = tiny(**options)
    idx = torch.randint(0, 96, (2, 16))
    with torch.no_grad():
        ref_logits, _ = model(idx, idx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(idx, idx)
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32
    torch.testing.assert_close(logits, ref_logits, rtol=0.05, atol=0.05)
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_autocast_on_cuda():
    model = tiny(**MODERN).cuda()
    idx = torch.randint(0, 96, (2, 16), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits, loss = model(idx, idx)
    assert logits.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()


@pytest.mark.slow
@pytest.mark.parametrize("options", [MODERN], ids=["modern"])
def test_torch_compile_matches_eager(options):
    model = tiny(**options)
    idx = torch.randint(0, 96, (2, 16))
    start = time.perf_counter()
    compiled = torch.compile(model, fullgraph=True)  # no graph breaks: one graph for the whole forward
    logits, loss = compiled(idx, idx)
    loss.backward()
    elapsed = time.perf_counter() - start
    ref_logits, _ = model(idx, idx)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    print(f"torch.compile of a tiny GPT (fwd+bwd) took {elapsed:.1f} s")
