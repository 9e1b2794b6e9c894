"""Machinery shared by our optimizers: device-side counters and stats, a non-finite guard, state keyed by name.

- The optimizer owns a step's gradient facts: `step()` reads the gradients once for the global norm, decides the clip
  factor and the skip on the device, and `stats()` returns them as 0-dim device tensors (`grad_norm`,
  `clip_factor`, ..., `skipped_steps`, `consecutive_skips`); the trainer reads them on the host in one transfer.
- A step with a non-finite gradient writes nothing, adds 1 to `skipped_steps` and to `consecutive_skips` (reset to 0
  by the next good step), all decided on the device.
- State is created lazily, once (`state_buffer`); a steady-state step allocates nothing parameter-sized for state.
- `state_dict()` carries the counters; `load_state_dict()` runs torch's load pre-hooks, then matches the saved state
  to the parameters by the `param_names` of each group (torch's named-parameter groups), so a reordering cannot
  silently misplace state, and refuses a state whose settings contradict this optimizer's (`_MUST_MATCH`).
- Every setting lives in the param groups (optim/settings.py), so `copy.deepcopy`, pickling and `state_dict()` carry
  it; a process group is kept by deepcopy and refused by pickle. `add_param_group` validates every group (also the
  ones given to `__init__`) with the class's `_check_group`.
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import torch

from .kernel_api import kernels
from .settings import check_lr, group_label, run_load_pre_hooks
from .sharding import global_norms


def finite_flag(norm: torch.Tensor) -> torch.Tensor:
    """0-dim bool tensor: is the (global gradient) norm finite? Never read on the host."""
    return torch.isfinite(norm)


def zero_where_not_(tensors: list[torch.Tensor], ok: torch.Tensor) -> None:
    """In place t = t if ok else 0 (so non-finite gradients cannot leak into state through a zero weight)."""
    zeros: dict = {}
    for t in tensors:  # one 0-dim zero per dtype and device, not one per tensor
        zero = zeros.get((t.dtype, t.device))
        if zero is None:
            zero = zeros[(t.dtype, t.device)] = torch.zeros((), dtype=t.dtype, device=t.device)
        torch.where(ok, t, zero, out=t)


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
    """Mixin for torch.optim.Optimizer subclasses: stats, skip counter in the state dict, name-keyed loading,
    settings kept in the param groups, validation of every group, deepcopy/pickle of the whole optimizer.

    Subclasses declare `_MUST_MATCH` (group keys a loaded state must agree with: the algorithm and its optimizer-wide
    settings), `_RUNTIME` (keys about where/how to run, e.g. `backend`: the running optimizer's value wins over a
    loaded one) and implement `_check_group(group, where)`. Other keys follow torch: the loaded values win."""

    _MUST_MATCH: tuple[str, ...] = ()
    _RUNTIME: tuple[str, ...] = ("backend",)
    _SETTINGS: tuple[str, ...] = ()  # optimizer-wide: equal in every group

    def _check_group(self, group: dict, where: str) -> None:
        check_lr(group["lr"], where)

    def _family(self) -> str:
        """The class that defines the rules (GClip and SGD are ClippedSGD, Scion is ClippedScion): what a state fits."""
        return next(c.__name__ for c in type(self).__mro__ if "_check_group" in vars(c))

    def add_param_group(self, param_group: dict) -> None:
        if self.__dict__.get("param_groups"):
            first = self.param_groups[0]
            for key in self._SETTINGS:
                param_group.setdefault(key, first[key])
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        index = len(self.param_groups) - 1
        where = group_label(index, group)
        try:
            for key in self._SETTINGS:
                if self.param_groups[0][key] != group[key]:
                    raise ValueError(f"{where}: {key} is an optimizer-wide setting; this optimizer has "
                                     f"{key}={self.param_groups[0][key]!r}, the group sets {group[key]!r}")
            self._check_group(group, where)
        except Exception:
            self.param_groups.pop()
            raise

    def agree_across(self, group) -> None:
        """Declare that the ranks of ``group`` hold the same gradients (DDP): each step then all-reduces a 4-byte
        non-finite flag with the global norm, so a fault on one rank makes every rank skip. A per-process binding:
        not part of the state dict, not pickled."""
        self.__dict__["_replicas"] = group

    def take_grad_sq_sum_from(self, accumulator: torch.Tensor | None) -> None:
        """Take the global gradient norm of every step as sqrt(``accumulator``): a 0-dim fp32 device tensor that
        whoever produces the gradients (hooks during backward, a DDP communication hook after each bucket's
        all-reduce) fills with this step's sum of squares of the final gradients, so ``step()`` reads the gradients
        once, for the update. The producer zeroes it before each step's backward and makes it agree across ranks;
        None goes back to the optimizer's own norm pass. A per-process binding: not saved, not pickled."""
        if accumulator is not None and (not isinstance(accumulator, torch.Tensor) or accumulator.numel() != 1):
            raise ValueError(f"take_grad_sq_sum_from: needs a 1-element tensor (the sum of squares), got "
                             f"{type(accumulator).__name__}")
        self.__dict__["_grad_sq_sum"] = accumulator

    @property
    def grad_sq_sum(self) -> torch.Tensor | None:
        return self.__dict__.get("_grad_sq_sum")

    @property
    def replicas(self):
        return self.__dict__.get("_replicas")

    def take_norm_from(self, source) -> None:
        """``optim.norm_in_backward``: take the step's global gradient norm from ``source`` (optim.backward_norm.
        BackwardNorm, fed by hooks during backward) instead of reading the gradients for it in ``step()``: the step
        then reads them once, for the update. A per-process binding like `agree_across`: not saved, not pickled."""
        self._check_norm_in_backward()
        self.__dict__["_backward_norm"] = source

    @property
    def backward_norm(self):
        """The optim.backward_norm.BackwardNorm this optimizer takes its norm from, or None (the norm is a pass)."""
        return self.__dict__.get("_backward_norm")

    def _check_norm_in_backward(self) -> None:
        """Refuse settings whose step needs more than the global norm from the gradients (overridden)."""

    def _grad_norm(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """The global L2 norm of ``grads`` (0-dim device tensor): from the backward hooks when `take_norm_from` was
        called; sqrt of the accumulator given to `take_grad_sq_sum_from`; else one pass over the gradients (local
        partial sums + one all-reduce when sharded)."""
        source = self.backward_norm
        if source is not None:
            return source.norm(grads, self.replicas)
        if self.grad_sq_sum is not None:
            return torch.sqrt(self.grad_sq_sum.detach().reshape(()).to(torch.float32))
        return global_norms([grads], backend=self.backend, plans=self.chunk_plans, replicas=self.replicas)[0]

    def _global_grad_norm(self, work: list[tuple[dict, list, list[torch.Tensor]]]
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """(global norm over every gradient of ``work``, is-finite flag): :meth:`_grad_norm` and its flag."""
        norm = self._grad_norm([g for _, _, grads in work for g in grads])
        return norm, finite_flag(norm)

    def _full_state(self) -> dict:
        state = super().__getstate__()
        for key in ("_counters", "_last_stats", "process_group"):
            if key in self.__dict__:
                state[key] = self.__dict__[key]
        return state

    def __getstate__(self):
        state = self._full_state()
        if state.get("process_group") is not None:
            raise TypeError(f"cannot pickle {type(self).__name__} bound to a process group: pickle its state_dict() "
                            f"and rebuild the optimizer with the process group instead")
        return state

    def __deepcopy__(self, memo):
        state = self._full_state()
        group = state.get("process_group")
        if group is not None:
            memo[id(group)] = group  # the copy runs on the same process group
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__setstate__(copy.deepcopy(state, memo))
        return new

    def _counter_device(self) -> torch.device:
        for group in self.param_groups:
            for p in group["params"]:
                return p.device
        return torch.device("cpu")

    def _record(self, ok: torch.Tensor, **stats: torch.Tensor) -> None:
        """Count the step on the device (skipped if not ``ok``) and keep this step's stats for `stats()`. The
        counters are updated in place, so a CUDA graph of the step (optim/capture.py) keeps counting on replay."""
        counters = self.__dict__.setdefault("_counters", {})
        bad = (~ok).to(torch.int64)
        for name in COUNTERS:
            if name not in counters:
                counters[name] = torch.zeros((), dtype=torch.int64, device=ok.device)
        counters["skipped_steps"].add_(bad)
        counters["consecutive_skips"].add_(bad).mul_(bad)
        self.__dict__["_last_stats"] = {k: v.detach() for k, v in stats.items()}

    # ---------------------------------------------------------------------------------------- lr on the device
    def keep_lr_on_device(self, enabled: bool = True) -> None:
        """Step with each group's lr read from a 0-dim fp32 device tensor instead of the Python float.

        ``param_groups[i]["lr"]`` stays what torch's schedulers and checkpoints expect (a float, or a 1-element
        tensor); at the start of every ``step()`` the optimizer writes it into its own device tensor for the group
        (:meth:`load_lrs`: a fill launch, no host sync) and hands the kernels that tensor. No launch of the step
        then carries a per-step Python number, so a CUDA graph of the step (optim/capture.py) replays with the
        current lr once :meth:`load_lrs` has run before the replay. A per-process binding (like `agree_across`):
        not part of the state dict, not pickled. The trainer turns it on for CUDA runs (trainer/build)."""
        self.__dict__["_lr_on_device"] = bool(enabled)
        self.__dict__.pop("_lr_tensors", None)

    @property
    def lr_on_device(self) -> bool:
        return bool(self.__dict__.get("_lr_on_device"))

    def load_lrs(self) -> None:
        """Write every group's current lr into its device tensor (created once, on the parameters' device)."""
        if not self.lr_on_device:
            return
        tensors = self.__dict__.get("_lr_tensors")
        if tensors is None or len(tensors) != len(self.param_groups):
            device = self._counter_device()
            tensors = self.__dict__["_lr_tensors"] = [torch.zeros((), dtype=torch.float32, device=device)
                                                      for _ in self.param_groups]
        for t, group in zip(tensors, self.param_groups):
            lr = group["lr"]
            if isinstance(lr, torch.Tensor):
                t.copy_(lr.detach().reshape(()))
            else:
                t.fill_(lr)

    def _begin_step(self) -> None:
        """Start of every step(): the lrs into their device tensors, unless a captured step did it before replay."""
        if not self.__dict__.get("_lrs_loaded_by_caller"):
            self.load_lrs()

    def lr_of(self, group: dict):
        """The lr ``group`` steps with: its device tensor when :meth:`keep_lr_on_device` is on, else ``group["lr"]``."""
        if self.lr_on_device:
            for t, g in zip(self.__dict__["_lr_tensors"], self.param_groups):
                if g is group:
                    return t
        return group["lr"]

    def state_buffer(self, p: torch.Tensor, name: str) -> torch.Tensor:
        """``self.state[p][name]``, created as zeros on first use only (lazy state, no per-step allocation)."""
        state = self.state[p]
        buf = state.get(name)
        if buf is None:
            buf = state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return buf

    def scratch_buffer(self, p: torch.Tensor, name: str) -> torch.Tensor:
        """A per-parameter work buffer (like :meth:`state_buffer`, created once) that is not optimizer state: never
        saved, not copied. A step that writes its temporaries (e.g. LMO directions) here keeps their addresses from
        step to step, so the chunk tables over them are built once and a CUDA graph of the step stays valid."""
        buffers = self.__dict__.setdefault("_scratch", {}).setdefault(name, {})
        buf = buffers.get(p)
        if buf is None:
            buf = buffers[p] = torch.empty_like(p, memory_format=torch.contiguous_format)
        return buf

    @property
    def chunk_plans(self) -> kernels.ChunkPlans:
        """This optimizer's Triton chunk tables (kernels.ChunkPlans), created on first use, never saved."""
        plans = self.__dict__.get("_chunk_plans")
        if plans is None:
            plans = self.__dict__["_chunk_plans"] = kernels.ChunkPlans()
        return plans

    def stats(self) -> dict[str, torch.Tensor]:
        """0-dim device tensors from the last step plus the running counters (`skipped_steps`, `consecutive_skips`)."""
        out = dict(self.__dict__.get("_last_stats", {}))
        out.update(self.__dict__.get("_counters", {}))
        return out

    def state_dict(self):
        sd = super().state_dict()
        sd["optimizer"] = self._family()
        sd["counters"] = {k: v.clone() for k, v in self.__dict__.get("_counters", {}).items()}
        return sd

    def load_state_dict(self, state_dict):
        state_dict = run_load_pre_hooks(self, state_dict)
        counters = state_dict.pop("counters", {})
        family = state_dict.pop("optimizer", None)  # absent from torch's own and from older state dicts
        if family is not None and family != self._family():
            raise ValueError(f"optimizer state was saved by {family}, this optimizer is {self._family()}")
        state_dict = self._reconcile_settings(remap_state_by_names(self, state_dict))
        hooks = self._optimizer_load_state_dict_pre_hooks
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()  # already run above
        try:
            super().load_state_dict(state_dict)
        finally:
            self._optimizer_load_state_dict_pre_hooks = hooks
        device = self._counter_device()
        self.__dict__["_counters"] = {k: v.to(device) for k, v in counters.items()}

    def _reconcile_settings(self, state_dict: dict) -> dict:
        """Saved groups completed with this optimizer's keys they lack (older or foreign states), `_RUNTIME` keys
        taken from this optimizer; a ValueError naming every `_MUST_MATCH` key whose saved value differs."""
        saved_groups, groups = state_dict["param_groups"], self.param_groups
        if len(saved_groups) != len(groups):
            raise ValueError(f"optimizer state has {len(saved_groups)} parameter groups, this "
                             f"{type(self).__name__} has {len(groups)}")
        conflicts, new_groups = [], []
        for i, (saved, current) in enumerate(zip(saved_groups, groups)):
            for key in self._MUST_MATCH:
                if key in saved and key in current and saved[key] != current[key]:
                    conflicts.append(f"{group_label(i, current)}: saved {key}={saved[key]!r}, "
                                     f"this optimizer has {key}={current[key]!r}")
            runtime = {k: current[k] for k in self._RUNTIME if k in current}
            new_groups.append({**{k: v for k, v in current.items() if k != "params"}, **saved, **runtime})
        if conflicts:
            raise ValueError(f"optimizer state does not fit this {type(self).__name__}: " + "; ".join(conflicts))
        return {**state_dict, "param_groups": new_groups}


def with_settings_of(optimizer: torch.optim.Optimizer, state_dict: dict) -> dict:
    """A copy of `state_dict` whose groups take `optimizer`'s values of the settings a load must otherwise match
    (`_MUST_MATCH`, e.g. rho, ns_steps, max_grad_norm): for a caller that changes them on purpose, as a resume that
    applies a changed config does. The buffers still load by name; the class must still be the same."""
    keys = getattr(optimizer, "_MUST_MATCH", ())
    groups = [{**saved, **{k: current[k] for k in keys if k in current}}
              for saved, current in zip(state_dict["param_groups"], optimizer.param_groups)]
    return {**state_dict, "param_groups": groups + state_dict["param_groups"][len(groups):]}


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
