"""The loss-only head (model/loss.py): the chunked fused cross-entropy equals the plain one, loss and gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model import GPT, ModelConfig
from model import loss as loss_module
from model.loss import chunk_elements, chunked_linear_cross_entropy, linear_cross_entropy

chunked = chunked_linear_cross_entropy


def plain(h, w, y):
    logits = F.linear(h, w)
    logits = logits.float() if logits.dtype != torch.float64 else logits
    return F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1), ignore_index=-1)


def inputs(dtype, seed=0, rows=(3, 7), vocab=11, width=5):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(*rows, width, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(vocab, width, generator=g, dtype=dtype, requires_grad=True)
    y = torch.randint(0, vocab, rows, generator=g)
    y[0, :3] = -1  # ignored targets
    return h, w, y


@pytest.mark.parametrize("chunk_elements", [11, 33, 10_000])  # 1 row, 3 rows, everything in one chunk
def test_chunked_loss_and_grads_match_plain_float64(chunk_elements):
    h, w, y = inputs(torch.float64)
    ref = plain(h, w, y)
    ref.backward()
    ref_grads = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    out = chunked_linear_cross_entropy(h, w, y, chunk_elements=chunk_elements)
    (2.5 * out).backward()  # an upstream gradient other than 1 is applied
    assert torch.allclose(out, ref, rtol=1e-12)
    assert torch.allclose(h.grad, 2.5 * ref_grads[0], rtol=1e-10, atol=1e-12)
    assert torch.allclose(w.grad, 2.5 * ref_grads[1], rtol=1e-10, atol=1e-12)


def test_chunked_matches_plain_under_bf16_autocast():
    h, w, y = inputs(torch.float32, rows=(4, 16), vocab=64, width=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = plain(h, w, y)
    ref.backward()
    ref_grads = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = chunked_linear_cross_entropy(h, w, y, chunk_elements=64 * 8)
    out.backward()
    assert torch.allclose(out, ref, rtol=1e-3)
    for got, want in zip((h.grad, w.grad), ref_grads):
        assert torch.allclose(got, want, rtol=3e-2, atol=3e-2 * want.abs().max().item())


def test_small_or_gradient_free_losses_take_the_plain_path_bitwise():
    h, w, y = inputs(torch.float32)
    assert torch.equal(linear_cross_entropy(h, w, y), plain(h, w, y))
    with torch.no_grad():
        assert torch.equal(linear_cross_entropy(h, w, y, chunk_elements=11), plain(h, w, y))


def test_gpt_training_forward_returns_no_logits_and_the_same_loss(monkeypatch):
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=8))
    idx = torch.randint(0, 40, (2, 8))
    logits, ref = model(idx, idx)
    ref.backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    model.config.loss_chunk_mib = 40 * 3 * 4 / 2 ** 20  # a budget of 3 rows of fp32 logits: 6 chunks
    calls = []
    monkeypatch.setattr(loss_module, "chunked_linear_cross_entropy",
                        lambda *a, **k: calls.append(k["chunk_elements"]) or chunked(*a, **k))
    none, out = model(idx, idx, return_logits=False)
    assert calls == [120]
    out.backward()
    assert none is None and logits.shape == (2, 8, 40)
    assert torch.allclose(out, ref, rtol=1e-6)
    for p, want in zip(model.parameters(), ref_grads):
        assert torch.allclose(p.grad, want, rtol=1e-4, atol=1e-6)


def test_chunk_from_the_memory_budget():
    assert chunk_elements(None, "cuda") == 2 ** 28  # 1 GiB of fp32 logits on a GPU
    assert chunk_elements(None, "cpu") == 2 ** 25 == loss_module.CHUNK_ELEMENTS
    assert chunk_elements(1.5, "cpu") == 3 * 2 ** 17
    with pytest.raises(ValueError, match="budget"):
        chunk_elements(0, "cpu")


def test_gpt_loss_with_a_budget_is_exact_in_float64():
    """A budget of a few rows of logits (4 chunks): the chunked loss and every gradient equal the unchunked float64 ones."""
    torch.manual_seed(0)
    kw = dict(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=8)
    model = GPT(ModelConfig(**kw)).double()
    idx = torch.randint(0, 40, (2, 8))
    hidden = {}
    model.final_norm.register_forward_hook(lambda module, args, out: hidden.update(x=out))
    model(idx)  # no targets: the hidden states, then the float64 reference loss on them
    ref = plain(hidden["x"], model.head.weight, idx)
    assert ref.dtype == torch.float64
    ref.backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    model.config.loss_chunk_mib = 2 * 40 * 8 / 2 ** 20  # 4 rows of fp32 logits (2 rows' bytes in float64)
    _, out = model(idx, idx, return_logits=False)
    out.backward()
    assert out.dtype == torch.float64 and torch.allclose(out, ref, rtol=1e-12)
    for p, want in zip(model.parameters(), ref_grads):
        assert torch.allclose(p.grad, want, rtol=1e-10, atol=1e-12)
