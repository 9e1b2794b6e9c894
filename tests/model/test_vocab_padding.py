"""Padded vocabulary rows (model.vocab_size past model.tokenizer_vocab_size) take no probability: the loss (plain and
chunked fused) equals that of the unpadded head exactly, they get no gradient, and sampling never picks them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model import GPT, ModelConfig
from model.generate import generate
from model.loss import linear_cross_entropy

K, V, C = 50, 64, 16  # tokens, padded rows, width


def unpadded_loss(h, w, y):
    return F.cross_entropy(F.linear(h, w[:K]).double(), y)


@pytest.mark.parametrize("chunk_elements", [None, 7 * V], ids=["plain", "chunked"])
def test_padded_loss_equals_unpadded_head(chunk_elements):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(40, C, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, C, generator=g, dtype=torch.float64)
    w[K:] *= 50  # padded rows that would dominate the softmax if they counted
    w.requires_grad_(True)
    y = torch.randint(0, K, (40,), generator=g)
    ours = linear_cross_entropy(h, w, y, chunk_elements=chunk_elements or 10 ** 9, classes=K)
    ours.backward()
    grad_h, grad_w = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref = unpadded_loss(h, w, y)
    ref.backward()
    assert torch.allclose(ours, ref, rtol=0, atol=1e-12)
    assert torch.allclose(grad_h, h.grad, rtol=0, atol=1e-12)
    assert torch.allclose(grad_w, w.grad, rtol=0, atol=1e-12)
    assert (grad_w[K:] == 0).all()


def tiny(**overrides):
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=C, vocab_size=V, tokenizer_vocab_size=K, block_size=16,
                            **overrides)).eval()
    with torch.no_grad():
        model.embed.weight[K:] = 5.0 * model.embed.weight[K:].sign()  # padded rows with large logits
    return model


def test_model_logits_loss_and_sampling_skip_padded_rows():
    model = tiny(tie_embeddings=False)
    with torch.no_grad():
        model.head.weight[K:] = 10.0
    idx = torch.randint(0, K, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, loss = model(idx[:, :-1], idx[:, 1:])
        _, fused = model(idx[:, :-1], idx[:, 1:], return_logits=False)
    assert torch.isneginf(logits[..., K:]).all() and torch.isfinite(logits[..., :K]).all()
    ref = F.cross_entropy(logits[..., :K].reshape(-1, K), idx[:, 1:].reshape(-1))
    assert torch.allclose(loss, ref) and torch.allclose(fused, ref)
    out = generate(model, idx[:, :2], 30, temperature=2.0, generator=torch.Generator().manual_seed(0))
    assert out.max() < K


def test_no_padding_when_tokenizer_vocab_is_unset_or_larger():
    for limit in (None, V, 10 ** 6):
        model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=C, vocab_size=V, tokenizer_vocab_size=limit,
                                block_size=8))
        assert model.config.padded_from is None
        logits, _ = model(torch.zeros(1, 3, dtype=torch.long))
        assert torch.isfinite(logits).all()
