"""optimizer.step() recorded once in a CUDA graph and replayed every step (`optim.cuda_graph = true`).

A step of our optimizers is a fixed sequence of kernels over fixed tensors: the gradient norm, the clip factor and the
non-finite skip are decided on the device, the counters and stats are updated in place, state buffers, LMO directions
and chunk tables are created once. The one value that changes from step to step on the host, the scheduled lr, is
written into a device tensor per parameter group (`keep_lr_on_device`, `load_lrs`: a fill launch, outside the graph)
that the kernels read. So the step can be captured once and replayed: the replay launches the same kernels with the
same arguments, and the lr and gradients they read are the current ones.

What a caller must keep (checked where cheap): parameters on one CUDA device; gradients that keep their storage
between steps (zeroed in place, as trainer/passes.py does; a moved gradient is an error naming the parameter); the
same parameters with gradients every step; nothing loaded into the optimizer after the capture (call `reset()` after
`load_state_dict`). One process only: the cross-rank collectives of a DDP/FSDP step are not captured here.
"""
from __future__ import annotations

import torch


class CapturedStep:
    """Callable replacing ``optimizer.step()``: ``warmup`` eager steps (on a side stream, as CUDA graph capture
    wants: state, chunk tables, Triton and cuBLAS set up), then one capture, then replays."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup: int = 3) -> None:
        if not hasattr(optimizer, "keep_lr_on_device"):
            raise TypeError(f"optim.cuda_graph: {type(optimizer).__name__} cannot be captured (it has no "
                            f"device-side lr); use one of this repository's optimizers")
        devices = {p.device for g in optimizer.param_groups for p in g["params"]}
        if len(devices) != 1 or next(iter(devices)).type != "cuda":
            raise ValueError(f"optim.cuda_graph: needs every parameter on one CUDA device, got "
                             f"{sorted(map(str, devices))}")
        if warmup < 1:
            raise ValueError(f"optim.cuda_graph: warmup must be >= 1 eager step, got {warmup}")
        self.optimizer = optimizer
        self.warmup = warmup
        optimizer.keep_lr_on_device()
        self.reset()

    def reset(self) -> None:
        """Forget the graph: the next calls warm up and capture again (after loading a state dict)."""
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_steps = 0
        self._grads: tuple = ()

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def _grad_addresses(self) -> tuple:
        return tuple(0 if p.grad is None else p.grad.data_ptr()
                     for g in self.optimizer.param_groups for p in g["params"])

    def _check_grads(self) -> None:
        if self._grad_addresses() != self._grads:
            names = [n for g in self.optimizer.param_groups for n in g.get("param_names", [])]
            moved = [names[i] if i < len(names) else f"#{i}"
                     for i, (a, b) in enumerate(zip(self._grad_addresses(), self._grads)) if a != b]
            raise RuntimeError(f"optim.cuda_graph: gradients moved since the step was captured ({moved[:5]}): zero "
                               f"them in place (zero_grad(set_to_none=False)) instead of re-creating them")

    def __call__(self) -> None:
        opt = self.optimizer
        opt.load_lrs()  # the current lr into device memory, read by the eager step or by the replay
        if self.graph is not None:
            self._check_grads()
            self.graph.replay()
            return
        current = torch.cuda.current_stream()
        if self.eager_steps < self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(current)
            with torch.cuda.stream(side):
                opt.step()
            current.wait_stream(side)
            self.eager_steps += 1
            return
        graph = torch.cuda.CUDAGraph()
        opt.__dict__["_lrs_loaded_by_caller"] = True  # inside the graph step() must not bake today's lr in
        try:
            with torch.cuda.graph(graph):
                opt.step()
        finally:
            opt.__dict__.pop("_lrs_loaded_by_caller", None)
        self.graph, self._grads = graph, self._grad_addresses()
        graph.replay()  # capture only records: this step runs now
