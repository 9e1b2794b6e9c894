"""Bounds on what one steady-state step costs at GPT-2 124M shapes (the anchor set: 74 tensors, 162.2M fp32
elements), measured under FakeTensor (no memory, no compute): kernels launched (non-view aten ops) and bytes
allocated, in units of P = the parameters' bytes. The torch path is measured (on CUDA the clipped-SGD family's
norm and update are 3 Triton launches instead). Numbers and what they count: docs/kernels.md."""
from __future__ import annotations

import pytest
import torch

from optim.step_cost import StepCost, measure

# (kernels, bytes allocated / P) measured at this commit, with a little room; lower them when the glue shrinks
BOUNDS = {"dgclip": (270, 3.05), "unconstrained_clipped_scion": (460, 7.9), "muon": (355, 7.35),
          "adamw": (40, 0.01)}


@pytest.mark.parametrize("name", list(BOUNDS))
def test_steady_step_at_gpt2_124m_stays_within_its_bounds(name):
    cost = measure(name)
    kernels, allocated = BOUNDS[name]
    assert cost["tensors"] == 74
    assert cost["kernels"] <= kernels, cost["by_op"]
    assert cost["allocated_over_P"] <= allocated, cost["by_op"]


def test_muon_glue_does_not_loop_per_tensor():
    """The AdamW part and the update application of Muon are foreach ops: apart from the non-finite guard's
    where (one per gradient), no op runs once per tensor (it ran ~5 times per tensor before: 1502 kernels)."""
    cost = measure("muon")
    per_tensor = {op: n for op, n in cost["by_op"].items() if n >= cost["tensors"] and op != "where"}
    assert not per_tensor and "pow" not in cost["by_op"], cost["by_op"]


def test_scion_lmos_do_not_loop_per_tensor():
    """Clipped Scion's LMOs run as foreach ops over all tensors of a norm and Newton-Schulz batched by shape: only the
    skip selects (where, in place) and the reference's per-layer inner products (dot) run once per tensor (the spectral
    scaling alone was 72 muls, the selects' copies 172 before)."""
    cost = measure("unconstrained_clipped_scion")
    per_tensor = {op: n for op, n in cost["by_op"].items() if n >= cost["tensors"] and op not in ("where", "dot")}
    assert not per_tensor and "copy_" not in cost["by_op"], cost["by_op"]


def test_the_counter_sees_kernels_and_allocations_but_not_views():
    x = torch.ones(4, 8)
    with StepCost() as cost:
        y = x * 2          # one kernel, 128 bytes
        y.add_(1)          # one kernel, nothing allocated
        y.view(8, 4).t()   # views: nothing
    assert cost.launches == 2 and cost.bytes_allocated == 4 * 8 * 4


def test_a_batched_matmul_is_one_kernel_and_one_output():
    """matmul of 3-D operands is bmm plus an _unsafe_view of its output (a view whose schema does not say so)."""
    a, b = torch.ones(2, 3, 4), torch.ones(2, 4, 5)
    with StepCost() as cost:
        a @ b
    assert dict(cost.kernels) == {"bmm": 1} and cost.bytes_allocated == 2 * 3 * 5 * 4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dgclip", "unconstrained_clipped_scion", "muon"])
def test_the_torch_path_of_a_step_compiles_without_graph_breaks(name):
    """torch.compile traces a whole step as one graph (on CUDA the Triton launches are kept outside compiled code
    by design: the trainer compiles the model, and optim.cuda_graph replays the step instead)."""
    import optim
    from tests.optim.test_every_optimizer import backward, config, tiny_model
    model = tiny_model(tie=False)
    opt = optim.build(model, config(name))
    backward(model, 0)
    opt.step()  # state exists
    backward(model, 1)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(opt.step)()
    assert explained.graph_break_count == 0, [str(b.reason)[:200] for b in explained.break_reasons]
