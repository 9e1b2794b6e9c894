"""Machinery shared by our optimizers: device-side counters and stats, a non-finite guard, state keyed by name.

- The optimizer owns a step's gradient facts: `step()` reads the gradients once for the global norm, decides the clip
  factor and the skip on the device, and `stats()` returns them as 0-dim device tensors (`grad_norm`,
  `clip_factor`, ..., `skipped_steps`, `consecutive_skips`); the trainer reads them on the host in one transfer.
- A step with a non-finite gradient writes nothing, adds 1 to `skipped_steps` and to `consecutive_skips` (reset to 0
  by the next good step), all decided on the device.
- State is created lazily, once (`state_buffer`); a steady-state step allocates nothing parameter-sized for state.
- `state_dict()` carries the counters; `load_state_dict()` matches the saved state to the parameters by the
  `param_names` of each group (torch's named-parameter groups), so a reordering cannot silently misplace state.
"""
from __future__ import annotations

import torch

from .sharding import global_norms


def finite_flag(norm: torch.Tensor) -> torch.Tensor:
    """0-dim bool tensor: is the (global gradient) norm finite? Never read on the host."""
    return torch.isfinite(norm)


def zero_where_not_(tensors: list[torch.Tensor], ok: torch.Tensor) -> None:
    """In place t = t if ok else 0 (so non-finite gradients cannot leak into state through a zero weight)."""
    for t in tensors:
        torch.where(ok, t, torch.zeros((), dtype=t.dtype, device=t.device), out=t)


def remap_state_by_names(optimizer: torch.optim.Optimizer, state_dict: dict) -> dict:
    """Reorder a saved optimizer state dict so its entries follow this optimizer's parameters *by name*."""
    saved_groups = state_dict["param_groups"]
    groups = optimizer.param_groups
    if not all("param_names" in g for g in saved_groups) or not all("param_names" in g for g in groups):
        return state_dict
    if len(saved_groups) != len(groups):
        raise ValueError(f"optimizer state has {len(saved_groups)} parameter groups, this optimizer has {len(groups)}")
    new_groups = []
    for i, (saved, current) in enumerate(zip(saved_groups, groups)):
        index_by_name = dict(zip(saved["param_names"], saved["params"]))
        missing = [n for n in current["param_names"] if n not in index_by_name]
        unexpected = sorted(set(index_by_name) - set(current["param_names"]))
        if missing or unexpected:
            raise ValueError(f"optimizer state group {i} ({current.get('role', '')}) does not match by name: "
                             f"missing {missing}, unexpected {unexpected}")
        new_groups.append({**saved, "params": [index_by_name[n] for n in current["param_names"]],
                           "param_names": list(current["param_names"])})
    return {**state_dict, "param_groups": new_groups}


COUNTERS = ("skipped_steps", "consecutive_skips")


class OptimizerStatsMixin:
    """Mixin for torch.optim.Optimizer subclasses: stats, skip counter in the state dict, name-keyed loading."""

    def _counter_device(self) -> torch.device:
        for group in self.param_groups:
            for p in group["params"]:
                return p.device
        return torch.device("cpu")

    def _record(self, ok: torch.Tensor, **stats: torch.Tensor) -> None:
        """Count the step on the device (skipped if not ``ok``) and keep this step's stats for `stats()`."""
        counters = self.__dict__.setdefault("_counters", {})
        bad = (~ok).to(torch.int64)
        for name in COUNTERS:
            if name not in counters:
                counters[name] = torch.zeros((), dtype=torch.int64, device=ok.device)
        counters["skipped_steps"] = counters["skipped_steps"] + bad
        counters["consecutive_skips"] = (counters["consecutive_skips"] + bad) * bad
        self.__dict__["_last_stats"] = {k: v.detach() for k, v in stats.items()}

    def state_buffer(self, p: torch.Tensor, name: str) -> torch.Tensor:
        """``self.state[p][name]``, created as zeros on first use only (lazy state, no per-step allocation)."""
        state = self.state[p]
        buf = state.get(name)
        if buf is None:
            buf = state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return buf

    def stats(self) -> dict[str, torch.Tensor]:
        """0-dim device tensors from the last step plus the running counters (`skipped_steps`, `consecutive_skips`)."""
        out = dict(self.__dict__.get("_last_stats", {}))
        out.update(self.__dict__.get("_counters", {}))
        return out

    def state_dict(self):
        sd = super().state_dict()
        sd["counters"] = {k: v.clone() for k, v in self.__dict__.get("_counters", {}).items()}
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        counters = state_dict.pop("counters", {})
        super().load_state_dict(remap_state_by_names(self, state_dict))
        device = self._counter_device()
        self.__dict__["_counters"] = {k: v.to(device) for k, v in counters.items()}


def run_closure(closure):
    """The loss of ``closure()`` evaluated with grad enabled (torch.optim's closure contract), or None."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def groups_with_grads(param_groups: list[dict]) -> list[tuple[dict, list[torch.Tensor], list[torch.Tensor]]]:
    """(group, params, grads) of every param group in which some parameter has a gradient."""
    work = [(group, *params_with_grads(group)) for group in param_groups]
    return [w for w in work if w[1]]


def global_grad_norm(work: list[tuple[dict, list, list[torch.Tensor]]], backend: str
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(global L2 norm over every gradient of ``work``, is-finite flag), both 0-dim device tensors. Sharded (FSDP)
    gradients: local sums of squares joined by one all-reduce, which also carries the non-finite flag."""
    norm = global_norms([[g for _, _, grads in work for g in grads]], backend=backend)[0]
    return norm, finite_flag(norm)


def params_with_grads(group: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(params, grads) of a group, skipping parameters without a gradient; sparse gradients are rejected."""
    params, grads = [], []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise ValueError("sparse gradients are not supported")
        params.append(p)
        grads.append(p.grad)
    return params, grads
