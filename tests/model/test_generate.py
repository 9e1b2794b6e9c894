"""Generation: KV-cache logits equal the full forward's; greedy generation equals a no-cache reference; seeded
sampling is deterministic; top-k, temperature 0 and the vocabulary limit behave."""

from __future__ import annotations

import pytest
import torch

from model import GPT, ModelConfig
from model.generate import generate, sample_next
from model.kv_cache import KVCache

CONFIGS = {
    "modern": dict(pos_emb="rope", norm="rmsnorm", qk_norm=True, mlp="relu2", bias=False),
    "gpt2": dict(pos_emb="learned", norm="layernorm"),
}


def small_gpt(kind: str, block_size: int = 24) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=96, block_size=block_size,
                           **CONFIGS[kind])).eval()


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_kv_cache_logits_equal_the_full_forward(kind):
    model = small_gpt(kind).double()
    idx = torch.randint(0, 96, (3, 20))
    with torch.no_grad():
        full, _ = model(idx)
        cache = KVCache(model.config.n_layer, model.config.block_size)
        chunks = [idx[:, :7], idx[:, 7:11]] + [idx[:, t:t + 1] for t in range(11, 20)]  # prompt, chunk, singles
        cached = torch.cat([model(chunk, cache=cache)[0] for chunk in chunks], dim=1)
    assert cache.length == 20
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-10)


def test_cache_refuses_to_outgrow_the_block():
    model = small_gpt("modern", block_size=8)
    cache = KVCache(model.config.n_layer, 8)
    model(torch.zeros(1, 6, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="exceeds model.block_size 8"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)


def reference_greedy(model: GPT, idx: torch.Tensor, steps: int) -> torch.Tensor:
    """nanoGPT's loop: a full forward over the (cropped) sequence for every new token."""
    for _ in range(steps):
        logits, _ = model(idx[:, -model.config.block_size:])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_greedy_generation_equals_the_no_cache_reference(kind):
    model = small_gpt(kind).double()
    prompt = torch.randint(0, 96, (2, 5))
    with torch.no_grad():
        expected = reference_greedy(model, prompt, 19)
    out = generate(model, prompt, 19, temperature=0.0)
    assert out.shape == (2, 24) and torch.equal(out, expected)
    assert torch.equal(generate(model, prompt, 19, temperature=1.0, top_k=1), expected)


def test_long_generation_slides_the_context():
    model = small_gpt("modern", block_size=8)
    out = generate(model, torch.randint(0, 96, (1, 12)), 30, temperature=0.0)  # prompt longer than the block
    assert out.shape == (1, 42)


def test_seeded_sampling_is_deterministic_and_respects_the_limits():
    model = small_gpt("modern")
    prompt = torch.randint(0, 96, (4, 3))

    def draw(seed, **kw):
        return generate(model, prompt, 15, generator=torch.Generator().manual_seed(seed), **kw)

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))
    assert draw(7, vocab_limit=10)[:, 3:].max() < 10
    model.train()
    generate(model, prompt, 2)
    assert model.training  # restored after generating in eval mode


def test_sample_next_top_k_and_temperature():
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0]])
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_next(logits, temperature=1.0, top_k=2, generator=gen) for _ in range(200)])
    assert set(draws.flatten().tolist()) == {1, 2}  # never outside the top 2
    assert sample_next(logits, temperature=0.0, top_k=None, generator=None).item() == 1
    with pytest.raises(ValueError, match="temperature"):
        generate(small_gpt("modern"), torch.zeros(1, 1, dtype=torch.long), 1, temperature=-1.0)
