"""Newton-Schulz in bf16 is bitwise the reference iteration (Jordan et al.'s quintic as LIONS-EPFL scion.py, the
Clipped Scion code and modded-nanogpt write it), on every path that runs whole matrices on CPU."""
from __future__ import annotations

import pytest
import torch

from optim import LMOSpec, lmo, newton_schulz5, orthogonalize
from optim.lmo import lmo_many


def reference_newton_schulz(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Our transcription of the reference code's 2-D iteration, operation for operation.

    bf16 input; transposed when tall; X / (||X||_F + 1e-7); per step A = X X^T, B = b A + c A A evaluated as
    (c A) A (Python's left-to-right * and @), X = a X + B X; transposed back; returns bf16.
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16()
    tall = G.size(0) > G.size(1)
    if tall:
        X = X.T
    X = X / (X.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        cA = c * A
        B = b * A + cA @ A
        X = a * X + B @ X
    return X.T if tall else X


SHAPES = [(8, 4), (4, 12), (64, 64), (96, 32), (32, 96), (128, 384)]


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES)
def test_newton_schulz_is_bitwise_the_reference_in_bf16(shape, device):
    g = torch.Generator().manual_seed(sum(shape))
    G = torch.randn(shape, generator=g).to(device)
    expected = reference_newton_schulz(G)
    assert torch.equal(newton_schulz5(G).bfloat16(), expected)  # fp32 out: bf16 values exactly, cast back losslessly
    assert torch.equal(newton_schulz5(G.bfloat16()), expected)
    # batched by shape (as orthogonalize and the sharded owners run it): each matrix of the batch is still bitwise
    batch = torch.stack([G, 3 * G, G.flip(0)])
    for got, m in zip(newton_schulz5(batch).bfloat16(), batch):
        assert torch.equal(got, reference_newton_schulz(m))


def test_the_optimizer_paths_use_the_same_iteration():
    """orthogonalize (Muon, Scion's spectral LMOs on one rank and at FSDP owners) and lmo_many return the reference
    bits; the spectral LMO is that times -sqrt(d_out/d_in)."""
    g = torch.Generator().manual_seed(7)
    mats = [torch.randn(s, generator=g) for s in [(16, 48), (48, 16), (16, 48), (32, 32)]]
    for m, o in zip(mats, orthogonalize(mats, steps=5, dtype=torch.bfloat16, split_across_ranks=False)):
        assert torch.equal(o.bfloat16(), reference_newton_schulz(m))
    spec = LMOSpec("spectral")
    for m, s in zip(mats, lmo_many(mats, [spec] * len(mats), ns_dtype=torch.bfloat16, split_across_ranks=False)):
        scale = (m.shape[0] / m.shape[1]) ** 0.5
        assert torch.equal(s, -scale * reference_newton_schulz(m).float())
        assert torch.equal(lmo(m, spec), s)


def test_the_old_operation_order_is_not_bitwise():
    """The check can fail: c (A A) instead of (c A) A changes the bf16 result (2-8% of the largest entry)."""
    g = torch.Generator().manual_seed(0)
    G = torch.randn(64, 64, generator=g)
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16() / (G.bfloat16().norm() + 1e-7)
    for _ in range(5):
        A = X @ X.T
        X = a * X + (b * A + c * (A @ A)) @ X
    assert not torch.equal(X, reference_newton_schulz(G))
