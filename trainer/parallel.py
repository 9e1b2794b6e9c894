"""Data parallelism applied to the model from outside: DDP (replicated) or FSDP2 (sharded: fsdp, hsdp), and their
state dicts. The layout comes from trainer/parallel_dims.py (the one place that reads the world size).

- ``ddp``: every rank holds the whole model; DistributedDataParallel all-reduces the gradients of the last
  micro-batch (``no_sync`` before). No buffer broadcast per forward (``forward_sync_buffers=False``, formerly
  ``broadcast_buffers=False``): the model's only buffers are the RoPE tables, which every rank computes
  identically from the config.
- ``fsdp``: ``fully_shard`` on every transformer block, then on the root (embeddings, final norm, head: the tied
  embedding/head matrix is one parameter of the root, sharded once). Each parameter becomes a DTensor sharded along
  dim 0; the forward all-gathers a block's parameters just in time and the backward reduce-scatters its gradients.
  Under gradient accumulation every micro-batch reduce-scatters into the sharded gradient; with
  train.fsdp_defer_grad_sync the unsharded gradients stay local until the last micro-batch instead.
  On CUDA the blocks compute in bf16 with fp32 gradient reduction (``MixedPrecisionPolicy``); on CPU in fp32.
- ``hsdp``: the same on a 2-D replicate x shard mesh: sharded within each group of train.shard_degree ranks,
  gradients reduce-scattered within the group and all-reduced across the groups (once per step).

Checkpoints: ddp (and one process) write whole tensors keyed by parameter name (:func:`full_model_state` /
:func:`full_optimizer_state`); fsdp and hsdp write the shards with DCP (trainer/sharded_checkpoint.py; hsdp: one
shard group). Every kind loads into every layout at any world size (whole tensors are sliced by the ``load_full_*``
functions, DCP reshards), so runs move between one process, ddp, fsdp and hsdp in every direction.
"""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import nn

from optim import sharding


def apply_fsdp(model: nn.Module, *, device: torch.device, dtype: str, compile_blocks: bool, mesh=None,
               compile_backend: str = "inductor") -> nn.Module:
    """Shard ``model`` (a model.GPT) in place with FSDP2 over ``mesh`` (trainer.parallel_dims.ParallelDims.build_mesh:
    1-D for fsdp, 2-D replicate x shard for hsdp; None: the default process group as a 1-D mesh); returns it.

    With ``compile_blocks`` every block is compiled before it is wrapped, and so are the root's own parts of the
    forward (the stem before the blocks and the tail after them: final norm, head and the chunked loss), each as one
    graph without breaks: FSDP2's hooks run between the compiled regions, never inside one.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = None
    if device.type == "cuda" and dtype in ("auto", "bfloat16"):
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    kwargs = {"mp_policy": mp} if mp is not None else {}
    if mesh is not None:
        kwargs["mesh"] = mesh
    if compile_blocks:
        compile_root_parts(model, backend=compile_backend)
    for block in model.blocks:
        if compile_blocks:
            block.compile(backend=compile_backend, fullgraph=True)
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def compile_root_parts(model: nn.Module, *, backend: str = "inductor") -> None:
    """Compile the parts of model.GPT's forward outside its blocks (``stem`` and ``tail``), each as one graph."""
    for name in ("stem", "tail"):
        setattr(model, name, torch.compile(getattr(model, name), backend=backend, fullgraph=True))


def wrap_model(raw_model: nn.Module, *, dims, device: torch.device, dtype: str, compile: bool, mesh=None,
               compile_backend: str = "inductor") -> nn.Module:
    """The module the training loop calls: compiled and wrapped for ``dims`` (trainer.parallel_dims.ParallelDims).

    fsdp / hsdp shard ``raw_model`` itself over ``mesh`` (its parameters become DTensors) and compile block by block
    plus the root's stem and tail; ddp compiles the whole model and wraps it when there are several ranks.
    """
    if dims.mode != "ddp":
        if not dims.sharded:
            return torch.compile(raw_model, backend=compile_backend) if compile else raw_model  # one rank
        return apply_fsdp(raw_model, device=device, dtype=dtype, compile_blocks=compile, mesh=mesh,
                          compile_backend=compile_backend)
    model = torch.compile(raw_model, backend=compile_backend) if compile else raw_model
    if dims.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                    gradient_as_bucket_view=True,  # gradients are views of the buckets: no second copy
                    **_no_buffer_sync_per_forward(DDP))  # RoPE tables: computed identically on every rank
    return model


def _no_buffer_sync_per_forward(ddp_class) -> dict:
    """DDP's keyword that turns off the buffer broadcast before every forward: ``forward_sync_buffers=False`` where
    torch has it (it deprecates ``broadcast_buffers``; buffers are still synced once at construction), else
    ``broadcast_buffers=False``."""
    import inspect

    if "forward_sync_buffers" in inspect.signature(ddp_class.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def no_sync(model: nn.Module) -> contextlib.AbstractContextManager:
    """Context for a micro-batch whose gradients stay local and unsharded (no all-reduce / reduce-scatter)."""
    if hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        return _fsdp_flag(model, "set_requires_gradient_sync")
    return contextlib.nullcontext()


def accumulating(model: nn.Module, *, defer_grad_sync: bool = False) -> contextlib.AbstractContextManager:
    """Context for a micro-batch before the last one of a step.

    ddp, or fsdp/hsdp with ``defer_grad_sync`` (train.fsdp_defer_grad_sync): :func:`no_sync`, the gradients stay
    whole on every rank until the last micro-batch. fsdp/hsdp by default: every micro-batch reduce-scatters into
    the sharded gradient (a rank never holds more than its shard between micro-batches); hsdp also defers its
    all-reduce across replicas to the last micro-batch (FSDP2 keeps the partial sums sharded meanwhile).
    """
    if defer_grad_sync or not hasattr(model, "set_requires_all_reduce"):
        return no_sync(model)
    return _fsdp_flag(model, "set_requires_all_reduce")


@contextlib.contextmanager
def _fsdp_flag(model, setter: str):
    getattr(model, setter)(False)
    try:
        yield
    finally:
        getattr(model, setter)(True)


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if sharding.is_sharded(t) else t


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with whole tensors (a collective under fsdp: every rank must call it)."""
    return {k: _full(v).detach().cpu() if sharding.is_sharded(v) else v for k, v in model.state_dict().items()}


@torch.no_grad()
def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load whole tensors into a plain or sharded model (each rank copies its rows into its shards)."""
    current = model.state_dict()
    missing = sorted(set(current) - set(state))
    unexpected = sorted(set(state) - set(current))
    if missing or unexpected:
        raise ValueError(f"checkpoint model state does not match the model: missing {missing}, "
                         f"unexpected {unexpected}")
    for name, dst in current.items():
        src = state[name]
        if tuple(src.shape) != tuple(dst.shape):
            raise ValueError(f"checkpoint tensor {name!r} has shape {tuple(src.shape)}, the model's has "
                             f"{tuple(dst.shape)}")
        _copy_rows(dst, src)


def _copy_rows(dst: torch.Tensor, whole: torch.Tensor) -> None:
    if sharding.is_sharded(whole):  # already in this run's layout (a sharded checkpoint read by DCP)
        if whole.to_local().data_ptr() != dst.to_local().data_ptr():
            dst.to_local().copy_(whole.to_local())
    elif sharding.is_sharded(dst):
        layout = sharding.row_shards(dst)
        rank = dist.get_rank(layout.group)
        start, size = layout.starts[rank], layout.sizes[rank]
        dst.to_local().copy_(whole[start:start + size])
    else:
        dst.copy_(whole)


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """``optimizer.state_dict()`` with every sharded state tensor replaced by the whole tensor (a collective).

    The optimizers keep the state of a sharded parameter as a DTensor with the parameter's layout (torch's AdamW
    does so by itself; ours create it with ``zeros_like(param)``), so gathering is ``full_tensor()``."""
    sd = optimizer.state_dict()
    for index, state in sd["state"].items():
        sd["state"][index] = {k: _full(v).cpu() if sharding.is_sharded(v) else v for k, v in state.items()}
    return sd


def load_full_optimizer_state(optimizer: torch.optim.Optimizer, sd: dict) -> None:
    """Load a whole-tensor optimizer state into an optimizer over plain or sharded parameters: the state of a
    sharded parameter becomes a DTensor holding this rank's rows."""
    from torch.distributed.tensor import DTensor

    optimizer.load_state_dict(sd)  # torch places each state tensor on its parameter's device and dtype
    for param, state in optimizer.state.items():
        if not sharding.is_sharded(param):
            continue
        layout = sharding.row_shards(param)
        rank = dist.get_rank(layout.group)
        start, size = layout.starts[rank], layout.sizes[rank]
        for key, value in list(state.items()):
            if isinstance(value, torch.Tensor) and not sharding.is_sharded(value) \
                    and tuple(value.shape) == tuple(param.shape) and value.dim() > 0:
                rows = value[start:start + size].to(param.to_local().device).clone()
                state[key] = DTensor.from_local(rows, param.device_mesh, param.placements, run_check=False,
                                                shape=param.shape, stride=param.stride())


def checkpoint_tensors(checkpoint_file, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The tensor part of a checkpoint (a collective: every rank calls it).

    Sharded runs write their tensors with DCP into a directory beside ``checkpoint_file``
    (trainer/sharded_checkpoint.py) and return what the checkpoint file carries instead; plain runs return the whole
    model and optimizer state dicts.
    """
    from trainer import sharded_checkpoint

    if sharded_checkpoint.is_sharded_run(model):
        return sharded_checkpoint.save_tensors(checkpoint_file, model, optimizer)
    return {"model": full_model_state(model), "optimizer": full_optimizer_state(optimizer)}


def restore_tensors(checkpoint_file, state: dict, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """``state`` with its tensors present: a sharded checkpoint's are read by DCP into this run's layout."""
    if "sharded" not in state:
        return state
    from trainer import sharded_checkpoint

    return sharded_checkpoint.load_tensors(checkpoint_file, state, model, optimizer)
