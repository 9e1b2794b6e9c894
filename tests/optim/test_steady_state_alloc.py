"""Optimizer state is created once, lazily: a steady-state step() allocates no parameter-sized state.

A TorchDispatchMode records every parameter-sized tensor an op creates (fresh storage, not a view or an in-place
result). Creation ops (zeros/empty/full/clone...) are how state is made: allowed on the first step, never after.
The fused paths (AdamW; the clipped-SGD family through the Triton kernel) allocate nothing parameter-sized at all;
the remaining allocations of the others are the math's own temporaries (LMO / Newton-Schulz outputs, the torch
reference's fp32 temporaries), listed by op in the failure message.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import optim
from tests.optim.test_every_optimizer import NAMES, backward, config, tiny_model

REPO_ROOT = Path(__file__).resolve().parents[2]
CREATION_OPS = {"zeros_like", "zeros", "empty_like", "empty", "full", "full_like", "ones_like", "ones",
                "new_zeros", "new_empty", "new_full", "new_ones", "clone", "empty_strided"}


class ParamSizedAllocations(TorchDispatchMode):
    """Records (op name, numel) of every fresh tensor whose element count equals some parameter's."""

    def __init__(self, numels: set[int]):
        super().__init__()
        self.numels = numels
        self.created: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if (isinstance(t, torch.Tensor) and t.numel() in self.numels
                    and t.untyped_storage().data_ptr() not in inputs):
                self.created.append((func.overloadpacket.__name__, t.numel()))
        return out


def step_allocations(opt, model, seed, min_numel: int = 2) -> list[tuple[str, int]]:
    """Parameter-sized tensors created by one step; ``min_numel`` leaves out parameters as small as a step's
    scalars stacked (the tiny model's 16-element norm gains match a stack of 16 per-tensor norms)."""
    backward(model, seed)
    with ParamSizedAllocations({p.numel() for p in model.parameters() if p.numel() >= min_numel}) as mode:
        opt.step()
    return mode.created


@pytest.mark.parametrize("name", NAMES)
def test_state_is_created_once_then_never_again(name):
    model = tiny_model(tie=False)
    opt = optim.build(model, config(name))  # momentum 0.9 for the SGD family: every optimizer has state
    first = step_allocations(opt, model, 0)
    assert [op for op, _ in first if op in CREATION_OPS], "the first step should create the optimizer state"
    for seed in (1, 2):
        later = step_allocations(opt, model, seed)
        created = [(op, n) for op, n in later if op in CREATION_OPS]
        assert not created, f"{name}: steady-state step() creates parameter-sized tensors: {created}"


def test_fused_adamw_step_allocates_nothing_parameter_sized():
    model = tiny_model(tie=False)
    opt = optim.build(model, config("adamw"))
    step_allocations(opt, model, 0)
    assert step_allocations(opt, model, 1, min_numel=64) == []


def test_guard_sees_the_setdefault_pattern():
    """The check can fail: the old `state.setdefault(name, torch.zeros_like(p))` allocates on every call."""
    p = torch.zeros(7, 3)
    state: dict = {}
    with ParamSizedAllocations({p.numel()}) as mode:
        for _ in range(2):
            state.setdefault("momentum_buffer", torch.zeros_like(p))
    assert mode.created == [("zeros_like", 21), ("zeros_like", 21)]


@pytest.mark.slow
def test_triton_clipped_sgd_step_allocates_nothing_parameter_sized():
    """δ-GClip + momentum through the Triton kernel (interpreted on the CPU): no parameter-sized tensor at all."""
    script = textwrap.dedent("""
        import torch, optim
        from clipgpt_kernels.chunk_table import override_tuning
        from tests.optim.test_every_optimizer import backward, config, tiny_model
        from tests.optim.test_steady_state_alloc import step_allocations
        model = tiny_model(tie=False)
        opt = optim.build(model, config("dgclip", backend="triton"))
        with override_tuning(chunk_size=1024, max_block=1024):
            step_allocations(opt, model, 0)
            print("ALLOCATED", step_allocations(opt, model, 1, min_numel=64))
    """)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ALLOCATED []" in proc.stdout, proc.stdout[-2000:]
