"""Our optimizers in Hugging Face's Trainer: a small GPT2LMHeadModel (built locally, no hub) trained with dgclip and
unconstrained_clipped_scion through `Trainer(optimizers=(opt, sched))`, `max_grad_norm=0`, then resumed from its
step-2 checkpoint: the resumed run ends with the uninterrupted run's weights, bitwise (CPU, one process)."""
from __future__ import annotations

import pytest
import torch

import optim
from tests.helpers import require

pytestmark = pytest.mark.slow
SETTINGS = {"dgclip": dict(lr=0.05, gamma=0.5, delta=0.1, momentum=0.9),
            "unconstrained_clipped_scion": dict(lr=1e-3, rho=1.0, ns_dtype="float32")}


def tiny_gpt2(transformers):
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=40, n_positions=8,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def dataset(n=16):
    """Two sequences, repeated: a batch the model can fit in four steps (the loss falls)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 40, (2, 8), generator=g).repeat(n // 2, 1)
    return [{"input_ids": row, "labels": row} for row in ids]


def train(transformers, name, out, steps, resume=None):
    model = tiny_gpt2(transformers)
    opt = optim.build(model, optim.OptimConfig(name=name, **SETTINGS[name]))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=4, save_strategy="steps", save_steps=2,
        logging_steps=1, report_to=[], use_cpu=True, max_grad_norm=0.0, seed=0, dataloader_num_workers=0,
        disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset(), optimizers=(opt, sched))
    trainer.train(resume_from_checkpoint=resume)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return model, opt, losses


@pytest.mark.parametrize("name", list(SETTINGS))
def test_trainer_trains_and_resumes_with_our_optimizer(name, tmp_path):
    transformers = require("transformers")
    require("accelerate")
    model, opt, losses = train(transformers, name, tmp_path / "full", steps=4)
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert opt.stats()["skipped_steps"].item() == 0
    assert all(g["role"] in ("embed", "hidden", "vector") for g in opt.param_groups)  # roles by module

    train(transformers, name, tmp_path / "part", steps=2)
    resumed, resumed_opt, _ = train(transformers, name, tmp_path / "part", steps=4,
                                    resume=str(tmp_path / "part" / "checkpoint-2"))
    for (n, a), b in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), n
