"""The training step's contract: one host read per step, one gradient-norm pass, stats owned by the optimizer.

Counts are taken as the difference between a 6-step and a 3-step run of the real trainer (after a warm-up run that
does the one-time work such as the shard scan's cache), so setup, the final evaluation and the final checkpoint
cancel out and what is left is exactly three steady-state steps.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from optim.kernel_api import kernels
import train_gpt
from tests.helpers import FAST, TINY, metrics

HOST_READ_OPS = {torch.ops.aten._local_scalar_dense.default}  # .item(), bool(t), float(t), int(t)
NORM_OPS = {torch.ops.aten._foreach_norm.Scalar, torch.ops.aten.linalg_vector_norm.default,
            torch.ops.aten.norm.Scalar, torch.ops.aten.norm.ScalarOpt_dim}


class Counter(TorchDispatchMode):
    """Counts host reads of tensor values and norm ops, by op name."""

    def __init__(self):
        super().__init__()
        self.host_reads = 0
        self.norm_ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in HOST_READ_OPS:
            self.host_reads += 1
        if func in NORM_OPS:
            self.norm_ops += 1
        return func(*args, **(kwargs or {}))


def _count_run(tmp_path, monkeypatch, steps: int, *extra: str) -> dict:
    counts = {"tolist": 0, "numpy": 0, "global_norm": 0}
    tolist, numpy, global_norm = torch.Tensor.tolist, torch.Tensor.numpy, kernels.global_norm

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(torch.Tensor, "tolist", counted("tolist", tolist))
    monkeypatch.setattr(torch.Tensor, "numpy", counted("numpy", numpy))
    monkeypatch.setattr(kernels, "global_norm", counted("global_norm", global_norm))
    out = tmp_path / f"run{steps}"
    with Counter() as mode:
        code = train_gpt.main(["--config", TINY, *FAST, f"--train.out_dir={out}", f"--train.steps={steps}",
                               "--train.checkpoint_every=0", "--train.eval_tokens=512", *extra])
    monkeypatch.undo()
    assert code == 0
    return dict(counts, host_reads=mode.host_reads + counts["tolist"] + counts["numpy"], norm_ops=mode.norm_ops)


@pytest.mark.parametrize("name, extra", [
    ("adamw", []),
    ("dgclip", ["--optim.lr=0.3", "--optim.gamma=1.0", "--optim.delta=0.1", "--optim.momentum=0.9"]),
    ("unconstrained_clipped_scion", ["--optim.lr=3.6e-4", "--optim.rho=50"]),
])
def test_one_host_read_and_one_norm_pass_per_step(tmp_path, monkeypatch, name, extra):
    torch.set_num_threads(1)
    args = [f"--optim.name={name}", "--model.block_size=32", "--train.batch_size=4", "--train.micro_batch_size=2",
            *extra]
    _count_run(tmp_path, monkeypatch, 1, *args)  # warm-up: one-time work (corpus, shard scan cache) done here
    short = _count_run(tmp_path, monkeypatch, 3, *args)
    long = _count_run(tmp_path, monkeypatch, 6, *args)
    per_step = {k: (long[k] - short[k]) / 3 for k in long}
    assert per_step["host_reads"] == 1, per_step  # loss and every logged stat in one transfer
    assert per_step["tolist"] == 1, per_step
    assert per_step["global_norm"] == 1, per_step  # the optimizer's, and nobody else's
    if name != "unconstrained_clipped_scion":  # Scion's LMOs take norms of the momentum, not of the gradient
        # the torch reference of the one global norm: one _foreach_norm (one dtype) + the norm of the norms
        assert per_step["norm_ops"] == 2, per_step


def test_skipped_rows_log_that_steps_own_stats(tmp_path, monkeypatch):
    """A skipped step logs the NaN norm and clip factor it computed, not the previous step's values."""
    from model import GPT
    original = GPT.forward
    calls = {"n": 0}

    def forward(self, idx, targets=None, **kwargs):
        logits, loss = original(self, idx, targets, **kwargs)
        if targets is not None and self.training:
            calls["n"] += 1
            if calls["n"] == 3:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", forward)
    torch.set_num_threads(1)
    code = train_gpt.main(["--config", TINY, *FAST, f"--train.out_dir={tmp_path}", "--train.steps=4",
                           "--optim.name=dgclip", "--optim.lr=0.3", "--optim.gamma=1.0", "--optim.delta=0.1",
                           "--train.eval_tokens=512"])
    assert code == 0
    records = metrics(tmp_path)
    assert [bool(r.get("skipped")) for r in records] == [False, False, True, False]
    assert [r["skipped_steps"] for r in records] == [0, 0, 1, 1]
    bad = records[2]
    assert bad["grad_norm"] is None and bad["clip_factor"] is None  # NaN, written as JSON null
    for good in (records[1], records[3]):
        assert math.isfinite(good["grad_norm"]) and 0.1 <= good["clip_factor"] <= 1.0
