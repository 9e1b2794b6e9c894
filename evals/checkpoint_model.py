"""A trained GPT from a run directory: the newest valid checkpoint (or a named one), in eval mode on a device.

The model is rebuilt from the `model` section of the config saved inside the checkpoint, so a checkpoint is
self-contained (an fsdp run's tensors are read from the ``.dcp`` directory beside it into the whole model).
Loading goes through `trainer.checkpoint` (checksums verified; a newest checkpoint that does not
load is skipped with a warning naming why, as on resume).
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from configs.base import ConfigError, build_section, validate_tree
from model import GPT, ModelConfig
from trainer import checkpoint


@dataclass
class LoadedModel:
    model: GPT
    path: Path  # the checkpoint file
    step: int
    config: dict  # the run's full config, as saved in the checkpoint


def pick_device(name: str) -> torch.device:
    """'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (as the trainer's dtype='auto'), none on CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def add_allow_unverified(parser) -> None:
    """The command-line override of the integrity check (the trainer's train.allow_unverified_checkpoints)."""
    parser.add_argument("--allow-unverified", action="store_true",
                        help="load a checkpoint that carries no integrity record (an older version's file whose "
                             ".sha256 side file was lost) instead of refusing it")


def find_checkpoint(run: str | Path | None, path: str | Path | None,
                    allow_unverified: bool = False) -> tuple[dict, Path]:
    """The state of the checkpoint `path`, or else of the newest loadable one of run directory `run`."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"--checkpoint {path}: no such file")
        try:
            return checkpoint.load(path, allow_unverified=allow_unverified), path
        except ValueError as err:
            raise ConfigError(f"--checkpoint {path} does not load: {err}") from None
    if run is None:
        raise ConfigError("give --run RUN_DIR (its newest checkpoint is used) or --checkpoint PATH")
    run = Path(run)
    if not run.is_dir():
        raise ConfigError(f"--run {run}: no such directory")
    found = checkpoint.scan(run, allow_unverified)
    for bad, why in found.unreadable:
        print(f"warning: skipping {bad}: {why}", file=sys.stderr)
    if found.path is None:
        where = checkpoint.checkpoint_dir(run)
        raise ConfigError(f"--run {run}: no loadable checkpoint in {where}" +
                          (" (all unreadable, see the warnings above)" if found.unreadable else
                           " (train with train.checkpoint_every, or wait for the run's last step)"))
    return found.state, found.path


def whole_model_state(state: dict, path: Path) -> dict[str, torch.Tensor]:
    """The model's whole tensors of a loaded checkpoint: in the file (one process, ddp) or, for fsdp/hsdp runs,
    read from the ``.dcp`` directory beside it by DCP without a process group (trainer/sharded_checkpoint.py)."""
    if "sharded" in state:
        from trainer.sharded_checkpoint import load_whole_model

        try:
            return load_whole_model(path, state)
        except Exception as err:  # noqa: BLE001 - DCP raises many kinds; the checksums passed, so say where
            raise ConfigError(f"{path}: the model tensors in {state['sharded']['dir']} do not load: "
                              f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    if "model" not in state:
        raise ConfigError(f"{path} holds no model tensors (key 'model'); it was not written by train_gpt.py")
    return state["model"]


def load_model(run: str | Path | None = None, path: str | Path | None = None, device: str = "auto",
               allow_unverified: bool = False) -> LoadedModel:
    state, path = find_checkpoint(run, path, allow_unverified)
    config = state.get("config") or {}
    if "model" not in config:
        raise ConfigError(f"{path} holds no model config (key 'config.model'); it was not written by train_gpt.py")
    model_cfg = build_section(ModelConfig, config["model"], prefix="model")
    validate_tree(model_cfg, "model.")
    model = GPT(model_cfg)
    model.load_state_dict(whole_model_state(state, path))
    model.to(pick_device(device)).eval()
    return LoadedModel(model, path, int(state.get("step", 0)), config)


def add_checkpoint_arguments(parser, verb: str) -> None:
    """`--run` (alias `--run-dir`, for torchrun), `--checkpoint` and `--allow-unverified` of the commands that read
    one checkpoint; `verb` completes "its newest valid checkpoint is ..."."""
    parser.add_argument("--run", "--run-dir", dest="run",
                        help=f"run directory (train.out_dir); its newest valid checkpoint is {verb}")
    parser.add_argument("--checkpoint", help="a checkpoint file instead of the run's newest")
    add_allow_unverified(parser)
