"""Evaluation does not make a compiled model recompile: one eval graph, compiled at the first evaluation only,
and a partial last validation batch is padded to the same shape. Also: train.tf32 reaches torch's flags."""
from __future__ import annotations

import numpy as np
import torch
import torch._dynamo

from data.loader import ValidationSet
from data.shards import write_shard
from model import GPT, ModelConfig
from trainer.passes import evaluate, make_backward


def test_train_eval_rounds_compile_once_each(tmp_path):
    torch._dynamo.reset()
    torch.manual_seed(0)
    raw = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=64, block_size=8))
    model = torch.compile(raw, backend="eager")
    val_path = write_shard(tmp_path / "t_val_000000.bin", np.arange(200) % 64)
    val = ValidationSet([val_path], seq_len=8, num_tokens=5 * 8)  # 5 sequences: batches of 2, 2 and 1 (padded)
    params = list(raw.parameters())
    batch = [(torch.randint(0, 64, (2, 8)), torch.randint(0, 64, (2, 8)))]
    kwargs = dict(rank=0, world_size=1, micro_batch_size=2, device=torch.device("cpu"), dtype="float32")

    def compiles():
        return torch._dynamo.utils.counters["stats"]["unique_graphs"]

    make_backward(model, batch, torch.device("cpu"), "float32", params)()
    after_train = compiles()
    first = evaluate(model, val, **kwargs)
    after_eval = compiles()
    for _ in range(2):
        make_backward(model, batch, torch.device("cpu"), "float32", params)()
        evaluate(model, val, **kwargs)
    assert after_eval - after_train <= 1  # the eval graph; the padded last batch adds none
    assert compiles() == after_eval  # later train/eval rounds compile nothing
    # the padded mean equals the plain mean over the 5 sequences
    with torch.no_grad():
        losses = [raw(x[None], y[None])[1] for x, y in (
            (val.tokens[i * 8:i * 8 + 8], val.tokens[i * 8 + 1:i * 8 + 9]) for i in range(5))]
    assert abs(first - torch.stack(losses).mean().item()) < 1e-5


def test_tf32_flag_follows_the_config(tmp_path):
    import train_gpt
    from tests.helpers import FAST, TINY
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        for value in (False, True):
            assert train_gpt.main(["--config", TINY, *FAST, f"--train.out_dir={tmp_path / str(value)}",
                                   "--train.steps=1", "--model.block_size=16", "--train.eval_tokens=64",
                                   f"--train.tf32={str(value).lower()}"]) == 0
            assert torch.backends.cuda.matmul.allow_tf32 is value and torch.backends.cudnn.allow_tf32 is value
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
