"""Cross-entropy of the output head without the logits of the whole batch.

Training needs only the loss and its gradient. For rows h (N, C), head W (V, C) and targets y, the mean loss is

    L = (1/n) sum_i [logsumexp(z_i) - z_i[y_i]],   z_i = W h_i,   n = #{i : y_i != ignore_index}

with dL/dz_i = (softmax(z_i) - onehot(y_i)) / n, dL/dh_i = W^T dL/dz_i and dL/dW = sum_i dL/dz_i h_i^T.
`chunked_linear_cross_entropy` walks the rows in chunks, computes each chunk's fp32 logits, its loss *and* its
gradients in the forward pass, and keeps only dL/dh (N, C) and dL/dW (V, C): peak memory is one chunk of logits
instead of N x V fp32 logits kept for the backward, at no extra FLOPs (the idea of Liger-Kernel's fused linear
cross-entropy, here in plain torch ops). Matmuls run in the ambient autocast dtype, as the unfused head does.
A chunk's size comes from a memory budget (`model.loss_chunk_mib`, :func:`chunk_elements`); each chunk re-reads the
head and re-accumulates its fp32 gradient, so fewer, larger chunks move fewer bytes (docs/model.md: cost model).

``classes=K`` (a head padded past the tokenizer's K ids, model.tokenizer_vocab_size): the logits of rows >= K are
set to -inf before the softmax, so logsumexp runs over the K real tokens only, those rows get softmax 0 (no
probability, zero gradient) and the loss equals that of the unpadded K-row head exactly, while the matmuls keep
the padded (faster) width.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

GPU_CHUNK_MIB = 1024  # default budget of one chunk's fp32 logits on a GPU: 2^28 logits (docs/model.md: cost model)
CPU_CHUNK_MIB = 128  # elsewhere: 2^25 logits (host memory is shared with everything else; tests use tiny shapes)
CHUNK_ELEMENTS = CPU_CHUNK_MIB * 2 ** 20 // 4  # the functions' default when called without a budget


def chunk_elements(budget_mib: float | None, device: torch.device | str) -> int:
    """Logits per chunk for a memory budget of ``budget_mib`` MiB of fp32 logits (None: GPU_CHUNK_MIB on CUDA,
    CPU_CHUNK_MIB elsewhere). Fewer rows x vocab than this: one plain pass. The chunk's softmax reuses the logits'
    memory; its copy in the matmul dtype adds half the budget under bf16 autocast."""
    if budget_mib is None:
        budget_mib = GPU_CHUNK_MIB if torch.device(device).type == "cuda" else CPU_CHUNK_MIB
    if not budget_mib > 0:
        raise ValueError(f"loss chunk budget must be > 0 MiB, got {budget_mib}")
    return max(1, int(budget_mib * 2 ** 20) // 4)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, chunk_rows: int, ignore_index: int, classes: int | None):
        valid = targets != ignore_index
        count = valid.sum()
        safe = torch.where(valid, targets, torch.zeros_like(targets))
        acc = torch.promote_types(h.dtype, torch.float32)  # fp32 math (fp64 for fp64 inputs, as in the tests)
        total = torch.zeros((), dtype=acc, device=h.device)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        for start in range(0, h.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            hc, yc, vc = h[rows], safe[rows], valid[rows]
            logits = F.linear(hc, weight).to(acc)
            if classes is not None:
                logits[:, classes:] = float("-inf")
            lse = torch.logsumexp(logits, dim=-1)
            total += ((lse - logits.gather(1, yc[:, None]).squeeze(1)) * vc).sum()
            dz = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            dz[torch.arange(dz.shape[0], device=dz.device), yc] -= 1.0
            dz.mul_(vc[:, None])
            grad_h[rows] = dz.to(weight.dtype) @ weight  # under autocast: the head's matmul dtype
            grad_w += dz.to(hc.dtype).t() @ hc
        ctx.save_for_backward(grad_h, grad_w, count)
        ctx.weight_dtype = weight.dtype
        return total / count

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, count = ctx.saved_tensors
        scale = grad_out / count
        return grad_h * scale.to(grad_h.dtype), (grad_w * scale).to(ctx.weight_dtype), None, None, None, None


def chunked_linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                                 ignore_index: int = -1, chunk_elements: int = CHUNK_ELEMENTS,
                                 classes: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of ``F.linear(h, weight).float()`` (rows >= ``classes`` masked) against ``targets``
    (see module doc).

    h (..., C), targets (...) with the same leading shape; returns a 0-dim fp32 loss (NaN if every target is
    ignored, as F.cross_entropy). ``chunk_elements`` bounds the logits held at once.
    """
    h2 = h.reshape(-1, h.shape[-1])
    rows = max(1, chunk_elements // weight.shape[0])
    return _ChunkedLinearCrossEntropy.apply(h2, weight, targets.reshape(-1), rows, ignore_index, classes)


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, ignore_index: int = -1,
                         chunk_elements: int | None = None, classes: int | None = None) -> torch.Tensor:
    """The loss of the head without returning its logits: one plain pass when the logits fit in one chunk
    (``chunk_elements``, default CHUNK_ELEMENTS) or no gradient is needed (bitwise the unfused loss), the chunked
    fused pass otherwise. ``classes``: rows of ``weight`` from here on are padding (logits -inf)."""
    chunk_elements = CHUNK_ELEMENTS if chunk_elements is None else chunk_elements
    rows = h.numel() // h.shape[-1]
    if rows * weight.shape[0] <= chunk_elements or not torch.is_grad_enabled():
        logits = F.linear(h, weight)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        if classes is not None:
            logits[..., classes:] = float("-inf")
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=ignore_index)
    return chunked_linear_cross_entropy(h, weight, targets, ignore_index=ignore_index, chunk_elements=chunk_elements,
                                        classes=classes)
