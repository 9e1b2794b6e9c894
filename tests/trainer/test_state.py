"""TrainState: a run's pieces in one object; save() then resume() into a fresh state continues bit for bit."""
from __future__ import annotations

import torch

import train_gpt
from configs.schema import load_config
from tests.helpers import FAST, TINY
from trainer.distributed import DistInfo
from trainer.state import train_step


def build(out_dir):
    cfg = load_config(["--config", TINY, *FAST, f"--train.out_dir={out_dir}", "--train.steps=6",
                       "--model.block_size=16", "--train.batch_size=4", "--train.micro_batch_size=2",
                       "--optim.name=dgclip", "--optim.lr=0.3", "--optim.gamma=1.0", "--optim.delta=0.1",
                       "--optim.momentum=0.9"])
    dist = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    state, _, regularizer = train_gpt.build(cfg, dist)
    return state, regularizer


def test_save_then_resume_continues_exactly(tmp_path):
    torch.set_num_threads(1)
    state, regularizer = build(tmp_path)
    state.resume()  # nothing to resume: step 0
    assert state.step == 0
    for _ in range(2):
        values = train_step(state, regularizer)
    assert state.step == 2 and state.skipped_steps == 0 and values["grad_norm"] > 0
    state.save()
    expected = [train_step(state, regularizer)["train_loss"] for _ in range(2)]
    weights = {k: v.clone() for k, v in state.raw_model.state_dict().items()}

    fresh, regularizer = build(tmp_path)
    fresh.resume()
    assert fresh.step == 2 and fresh.loader.state_dict()["pos"] > 0
    assert [train_step(fresh, regularizer)["train_loss"] for _ in range(2)] == expected
    for k, v in fresh.raw_model.state_dict().items():
        assert torch.equal(v, weights[k]), k
