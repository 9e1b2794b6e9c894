"""The sharded layout of checkpoints of fsdp / hsdp runs: the shards written and read with
torch.distributed.checkpoint (DCP). The checkpoint format (file, checksums, the tensor directory beside it and its
verification, rotation) is trainer/checkpoint.py's; this module imports it, never the other way round.

A checkpoint of a run whose parameters are sharded is two things beside each other in ``<out_dir>/checkpoints``:

- ``step_0000100.dcp/``: the model's and the optimizer's tensors, written by the ranks of one shard group in
  parallel (DCP's file format: one ``__<rank>_0.distcp`` per rank of the group and a ``.metadata``; under hsdp the
  other replicas hold the same shards and write nothing), first under a temporary name, renamed when all ranks are
  done;
- ``step_0000100.pt``: the usual checkpoint file (checksummed, atomic, written last, so it marks the checkpoint
  complete) holding everything else: step, schedule, loader, RNG, config, the optimizer's param groups and scalar
  state, the model's tensor shapes, and the SHA-256 of every file of the ``.dcp`` directory.

Loading goes through DCP's resharding: the tensors are read into whatever layout the resuming run has (another world
size, another shard degree, or whole tensors under ddp / one process), so one process, ddp, fsdp and hsdp
checkpoints move in every direction. Whole-model
checkpoints (ddp, one process) stay single ``.pt`` files.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from optim import sharding
from trainer.checkpoint import CheckpointWriteError, file_sha256, tensor_dir

_PLACEHOLDER = "dcp:"  # an optimizer-state value stored in the .dcp directory under this key


def is_sharded_run(model: torch.nn.Module) -> bool:
    return any(sharding.is_sharded(p) for p in model.parameters())


def _param_names(optimizer: torch.optim.Optimizer) -> list[str]:
    names = []
    for i, group in enumerate(optimizer.param_groups):
        given = group.get("param_names") or [f"group{i}.param{j}" for j in range(len(group["params"]))]
        names += list(given)
    return names


def _split_optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict, dict[str, torch.Tensor]]:
    """(optimizer.state_dict() with its non-scalar tensors replaced by placeholders, {key: tensor} of those)."""
    sd = optimizer.state_dict()
    sd["state"] = {index: dict(state) for index, state in sd["state"].items()}  # the live state's dicts otherwise
    names = _param_names(optimizer)
    tensors = {}
    for index, state in sd["state"].items():
        for key, value in list(state.items()):
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                flat = f"optim/{names[index]}/{key}"
                tensors[flat] = value
                state[key] = _PLACEHOLDER + flat
    return sd, tensors


def _writers(model: torch.nn.Module) -> tuple[bool, object]:
    """(whether this rank writes, the process group of the writers). Under hsdp the ranks of the first shard group
    (replica 0) write, every other replica holds the same shards and writes nothing; under fsdp every rank writes."""
    param = next(p for p in model.parameters() if sharding.is_sharded(p))
    mesh, shard_dim = param.device_mesh, sharding.shard_dim_of(param)
    if mesh.ndim == 1:
        return True, None
    coordinate = mesh.get_coordinate()
    return all(c == 0 for d, c in enumerate(coordinate) if d != shard_dim), mesh.get_group(shard_dim)


def save_tensors(final_file: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Write the model's and optimizer's tensors into ``tensor_dir(final_file)`` (a collective: every rank calls it;
    one shard group writes, see :func:`_writers`); return the entries the checkpoint file carries instead of them
    (``model_shapes``, ``optimizer`` with placeholders, ``sharded`` with the directory's name and the SHA-256 of
    each of its files)."""
    import torch.distributed.checkpoint as dcp

    target = tensor_dir(final_file)
    tmp = target.with_name(f".{target.name}.tmp")
    rank = dist.get_rank()
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    head_optimizer, optimizer_tensors = _split_optimizer_state(optimizer)
    model_state = model.state_dict()
    flat = {f"model/{k}": v for k, v in model_state.items()} | optimizer_tensors
    writes, group = _writers(model)
    error, mine = None, {}
    if writes:
        try:
            dcp.save(flat, storage_writer=dcp.FileSystemWriter(str(tmp), sync_files=True), process_group=group)
            prefix = f"__{dist.get_rank(group) if group is not None else rank}_"
            mine = {p.name: file_sha256(p) for p in tmp.iterdir() if p.name.startswith(prefix)}
        except Exception as err:  # noqa: BLE001 - reported to every rank below, so all stop the same way
            error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (error, mine))
    errors = [e for e, _ in gathered if e is not None]
    if errors:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointWriteError(f"could not write the sharded tensors of {final_file.name} into {target}: "
                                   f"{errors[0]}; the partial directory was removed and the previous checkpoint "
                                   f"is intact")
    files = {name: digest for _, part in gathered for name, digest in part.items()}
    if rank == 0:
        files[".metadata"] = file_sha256(tmp / ".metadata")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    dist.barrier()
    return {"model_shapes": {k: tuple(v.shape) for k, v in model_state.items()}, "optimizer": head_optimizer,
            "sharded": {"dir": target.name, "files": files}}


def load_tensors(checkpoint_file: Path, state: dict, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer) -> dict:
    """Fill ``state`` (a sharded checkpoint's file contents) with its tensors, read by DCP into this run's layout.

    The model's own parameters and buffers are the read targets (loaded in place); optimizer state tensors are read
    into fresh tensors shaped like their parameter (sharded like it when it is sharded). Returns ``state`` with
    ``model`` (the model's own tensors) and ``optimizer`` (a loadable state dict) filled in. When the model's shapes
    differ from the checkpoint's, returns ``model`` as shape-only (meta) tensors and reads nothing, so the caller's
    shape check reports the change.
    """
    import torch.distributed.checkpoint as dcp

    current = model.state_dict()
    saved_shapes = state["model_shapes"]
    if set(saved_shapes) != set(current) or any(tuple(current[k].shape) != tuple(s) for k, s in saved_shapes.items()):
        return {**state, "model": {k: torch.empty(s, device="meta") for k, s in saved_shapes.items()}}
    params = dict(zip(_param_names(optimizer), (p for g in optimizer.param_groups for p in g["params"])))
    head = state["optimizer"]
    targets = {f"model/{k}": v for k, v in current.items()}
    optimizer_targets = {}
    for index, entry in head["state"].items():
        for key, value in entry.items():
            if isinstance(value, str) and value.startswith(_PLACEHOLDER):
                name = value[len(_PLACEHOLDER):].split("/")[1]
                param = params.get(name)
                if param is None:
                    raise ValueError(f"optimizer state for {name!r} in the checkpoint, but no such parameter")
                optimizer_targets[value[len(_PLACEHOLDER):]] = torch.zeros_like(param)
    dcp.load(targets | optimizer_targets,
             storage_reader=dcp.FileSystemReader(str(checkpoint_file.with_name(state["sharded"]["dir"]))))
    optimizer_state = {**head, "state": {
        index: {k: optimizer_targets[v[len(_PLACEHOLDER):]] if isinstance(v, str) and v.startswith(_PLACEHOLDER)
                else v for k, v in entry.items()}
        for index, entry in head["state"].items()}}
    return {**state, "model": current, "optimizer": optimizer_state}


def load_whole_model(checkpoint_file: Path, state: dict) -> dict[str, torch.Tensor]:
    """The model's whole tensors of a sharded checkpoint, read into one process without a process group (for
    sample.py, evals and exports: a model rebuilt from the checkpoint's config loads them with ``load_state_dict``).

    DCP reads every rank's shards of each ``model/*`` tensor into one CPU tensor of the saved shape; the optimizer's
    tensors are not read."""
    import torch.distributed.checkpoint as dcp

    reader = dcp.FileSystemReader(str(checkpoint_file.with_name(state["sharded"]["dir"])))
    saved = reader.read_metadata().state_dict_metadata  # each tensor's dtype as written
    targets = {f"model/{k}": torch.empty(shape, dtype=saved[f"model/{k}"].properties.dtype)
               for k, shape in state["model_shapes"].items()}
    dcp.load(targets, storage_reader=reader, no_dist=True)
    return {k[len("model/"):]: v for k, v in targets.items()}
