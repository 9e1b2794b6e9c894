"""The global gradient norm taken during backward (`optim.norm_in_backward = true`), so `step()` reads the gradients
once (for the update) instead of twice (norm, then update).

    ||g||^2 = sum over the gradient pieces b of ||b||^2     (each piece squared as soon as it is final)

A :class:`BackwardNorm` owns one 0-dim device accumulator (fp32; fp64 when the parameters are) and adds the sum of
squares of each piece of the *final* gradient into it where that piece is produced:

- one process: a post-accumulate-grad hook on every parameter (``register_post_accumulate_grad_hook``): the hook
  sees ``p.grad`` after this micro-batch's contribution was added;
- ddp: a DDP communication hook that runs the usual all-reduce (averaging) of a bucket and, when it completes, adds
  the bucket's sum of squares: the averaged gradient every rank holds;
- fsdp / hsdp: the same post-accumulate-grad hook on the sharded parameters; FSDP2 runs it when the reduce-scattered
  (hsdp: and all-reduced across replicas) shard lands in ``.grad``. The accumulator then holds this rank's partial
  sum; the optimizer's one all-reduce of gradient facts over the shard dimension (optim/sharding.py) joins them.

Gradient accumulation: a hook fires on every micro-batch (one process, fsdp) but only the gradient after the last
one is the step's gradient. The accumulator counts only while armed: the caller :meth:`arm`s it (zeroes it) right
before the last micro-batch's backward (trainer/passes.py does), so earlier micro-batches' hooks add nothing. Under
ddp the communication hook runs on the synchronizing (last) micro-batch only anyway.

A NaN or inf anywhere makes the accumulator NaN or inf, so the optimizer's non-finite skip works as before. What the
step reads is checked on the host without a sync: the elements the hooks saw must be exactly the elements of the
gradients the step updates, else a RuntimeError (a step without a fresh armed backward, or hooks that missed part of
the gradient). Anything that changes the gradients after backward (gradient regularization, optim.gr) would make the
norm stale: the config refuses that combination (configs/schema.py).
"""
from __future__ import annotations

import torch

from .sharding import agree_nonfinite, local, norm_dtype, shard_group, sum_across


class BackwardNorm:
    """A device accumulator of the squared gradient norm fed by backward hooks; read once per step by the
    optimizer (`OptimizerStatsMixin.take_norm_from`)."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        params = [p for p in params if p.requires_grad]
        if not params:
            raise ValueError("optim.norm_in_backward: the model has no trainable parameters")
        self.sum_of_squares = torch.zeros((), dtype=norm_dtype(params), device=local(params[0]).device)
        self.armed = False
        self.elements = 0  # host count of the gradient elements squared since arm()
        self.handles: list = []

    # ------------------------------------------------------------------------------------------ attaching
    @classmethod
    def attach(cls, model: torch.nn.Module, params: list[torch.Tensor]) -> "BackwardNorm":
        """Hooks on ``model`` (the module the training loop calls): a communication hook when it is DDP, else
        post-accumulate-grad hooks on ``params`` (the raw model's parameters: plain, or FSDP2's sharded ones)."""
        norm = cls(params)
        if hasattr(model, "register_comm_hook"):  # DistributedDataParallel
            model.register_comm_hook(model.process_group, norm._ddp_hook)
        else:
            norm.handles = [p.register_post_accumulate_grad_hook(norm._grad_hook) for p in params if p.requires_grad]
        return norm

    def detach(self) -> None:
        """Remove the post-accumulate-grad hooks (a DDP communication hook cannot be removed)."""
        for handle in self.handles:
            handle.remove()
        self.handles = []

    # --------------------------------------------------------------------------------------------- hooks
    def _add(self, grad: torch.Tensor) -> None:
        if grad.numel():
            self.sum_of_squares.add_(torch.linalg.vector_norm(grad, dtype=self.sum_of_squares.dtype).square())
        self.elements += grad.numel()

    @torch.no_grad()
    def _grad_hook(self, param: torch.Tensor) -> None:
        if self.armed and param.grad is not None:
            self._add(local(param.grad))

    def _ddp_hook(self, process_group, bucket):
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        future = allreduce_hook(process_group, bucket)  # the usual all-reduce of the bucket, averaged
        if not self.armed:
            return future
        elements = sum(p.numel() for p in bucket.parameters())

        def square(done):
            averaged = done.value()
            with torch.no_grad():
                self._add(averaged[:elements] if averaged.numel() > elements else averaged)
            return averaged

        return future.then(square)

    # --------------------------------------------------------------------------------------------- steps
    def arm(self) -> None:
        """Start counting: zero the accumulator (one fill launch, no sync). Call right before the backward of the
        step's last micro-batch; hooks of earlier micro-batches add nothing."""
        self.sum_of_squares.zero_()
        self.elements = 0
        self.armed = True

    def norm(self, grads: list[torch.Tensor], replicas=None) -> torch.Tensor:
        """The global L2 norm of ``grads`` (the gradients the step updates) from the accumulator: 0-dim, on the
        device. Sharded gradients: the partial sums joined by one all-reduce over the shard group; replicated
        gradients with ``replicas``: the 4-byte non-finite flag all-reduce (sharding.agree_nonfinite). Reads no
        gradient. Ends the counting (the next step must :meth:`arm` again)."""
        expected = sum(local(g).numel() for g in grads)
        seen, armed = self.elements, self.armed
        self.armed, self.elements = False, 0
        if not armed or seen != expected:
            why = "no armed backward since the last step" if not armed else \
                f"hooks saw {seen} gradient elements, the step updates {expected}"
            raise RuntimeError(f"optim.norm_in_backward: the gradient norm taken during backward does not cover this "
                               f"step's gradients ({why}); call BackwardNorm.arm() right before the last "
                               f"micro-batch's backward and do not change the gradients between backward and step()")
        group = shard_group(grads)
        if group is not None:
            return sum_across(self.sum_of_squares.reshape(1), group)[0].sqrt()
        return agree_nonfinite(self.sum_of_squares.sqrt().reshape(1), replicas)[0]
