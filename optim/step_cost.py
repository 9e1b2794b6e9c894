"""What one steady-state ``optimizer.step()`` costs in memory traffic terms, measured without running it.

The step runs under ``FakeTensorMode`` (shapes and dtypes only: a GPT-2 124M step costs milliseconds and no memory)
with a ``TorchDispatchMode`` that sees every aten op: ops whose outputs alias an input without mutating it (views)
launch nothing; every other op is counted as one kernel launch, and the bytes of every output that does not alias
an input are counted as allocated. This is the torch path (CPU, or ``backend="torch"``); on CUDA the clipped-SGD
family runs Triton kernels instead (3 launches for the norm and the update, kernels/).

    python -m optim.step_cost                       # the four optimizers at the anchor set (GPT-2 124M, untied)
"""
from __future__ import annotations

import argparse
from collections import Counter

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .bench import HYPERPARAMETERS, SIZES, shapes_of
from .config import OptimConfig
from .registry import REGISTRY

OPTIMIZERS = ("dgclip", "unconstrained_clipped_scion", "muon", "adamw")
# views whose schema does not say so (matmul reshapes a batched product's output with _unsafe_view: the output
# shares the bmm result's storage, no launch, no bytes)
UNMARKED_VIEWS = (torch.ops.aten._unsafe_view,)


class StepCost(TorchDispatchMode):
    """Counts kernel launches (non-view aten ops, by name) and bytes of fresh outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels: Counter = Counter()
        self.bytes_allocated = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        schema = func._schema
        returns = schema.returns
        aliased = [r.alias_info is not None for r in returns]
        if (returns and all(aliased) and not schema.is_mutable) or func.overloadpacket in UNMARKED_VIEWS:
            return out  # a view: metadata only
        tensors = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not tensors and not schema.is_mutable:
            return out  # a query (t.device, promote_types, ...): no kernel
        self.kernels[func.overloadpacket.__name__] += 1
        if not any(aliased):
            self.bytes_allocated += sum(t.numel() * t.element_size() for t in tensors)
        return out

    @property
    def launches(self) -> int:
        return sum(self.kernels.values())


def fake_parameters(size: str = "anchor") -> list[tuple[str, torch.nn.Parameter]]:
    """The named parameter set of optim.bench's ``size`` with fp32 gradients, as fake tensors (enter a
    FakeTensorMode first)."""
    named = []
    for name, shape in shapes_of(**SIZES[size]):
        p = torch.nn.Parameter(torch.empty(shape))
        p.grad = torch.empty(shape)
        named.append((name, p))
    return named


def measure(name: str, size: str = "anchor", warmup: int = 2) -> dict:
    """Kernels and bytes of one steady-state step of ``name`` (after ``warmup`` steps created the state)."""
    kwargs = dict(HYPERPARAMETERS.get(name, {}))
    if name == "dgclip":
        kwargs["momentum"] = 0.9
    with FakeTensorMode():
        named = fake_parameters(size)
        optimizer = REGISTRY[name].build(named, OptimConfig(name=name, backend="torch", **kwargs))
        for _ in range(warmup):
            optimizer.step()
        with StepCost() as cost:
            optimizer.step()
    param_bytes = sum(p.numel() * p.element_size() for _, p in named)
    return {"optimizer": name, "tensors": len(named), "param_bytes": param_bytes, "kernels": cost.launches,
            "bytes_allocated": cost.bytes_allocated, "allocated_over_P": cost.bytes_allocated / param_bytes,
            "by_op": dict(cost.kernels.most_common())}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m optim.step_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="anchor")
    parser.add_argument("--optims", nargs="+", default=list(OPTIMIZERS), choices=sorted(REGISTRY))
    args = parser.parse_args(argv)
    rows = [measure(name, args.size) for name in args.optims]
    print(f"{'optimizer':<30}{'kernels':>9}{'allocated':>12}  top ops")
    for r in rows:
        top = ", ".join(f"{k} {v}" for k, v in list(r["by_op"].items())[:6])
        print(f"{r['optimizer']:<30}{r['kernels']:>9}{r['allocated_over_P']:>11.2f}P  {top}")
    return rows


if __name__ == "__main__":
    main()
