"""A run directory with a checkpoint of a small random GPT (GPT-2 vocabulary), written the trainer's way."""

from __future__ import annotations

import pytest
import torch

from configs.base import to_dict
from configs.schema import Config
from model import GPT, ModelConfig
from trainer import checkpoint


def write_run(out_dir, step: int = 3, seed: int = 0, **model) -> GPT:
    cfg = Config(model=ModelConfig(**{**dict(n_layer=2, n_head=2, n_embd=32, block_size=64, pos_emb="rope",
                                             norm="rmsnorm", qk_norm=True, mlp="relu2", bias=False), **model}))
    torch.manual_seed(seed)
    gpt = GPT(cfg.model)
    checkpoint.save(out_dir, step, {"step": step, "model": gpt.state_dict(), "config": to_dict(cfg)}, keep=2)
    return gpt


@pytest.fixture
def run_dir(tmp_path):
    write_run(tmp_path, step=2, seed=1)
    write_run(tmp_path, step=3, seed=0)  # the newest
    return tmp_path
