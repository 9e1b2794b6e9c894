"""GPT-2 weights from Hugging Face: `model.init_from` fills the shape and loads the weights, so our logits and loss
equal transformers' GPT2LMHeadModel on the same tokens; explicit settings that differ are errors."""

from __future__ import annotations

import pytest
import torch

from configs.base import ConfigError
from configs.schema import load_config
from model import GPT
from model.hf_gpt2 import from_pretrained, load_hf_weights
from tests.helpers import require

VOCAB = 50257


def hf_gpt2(tmp_path, *, safetensors: bool = True, **config):
    """A small random GPT2LMHeadModel (GPT-2's vocabulary, gelu_new), saved to tmp_path/hf."""
    transformers = require("transformers")
    torch.manual_seed(0)
    settings = dict(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
                    embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**settings, **config})).eval()
    with torch.no_grad():  # HF's init leaves biases 0 and gains 1: move them so the test sees their names
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    out = tmp_path / "hf"
    model.save_pretrained(out, safe_serialization=safetensors)
    return model, out


@pytest.mark.parametrize("safetensors", [True, False], ids=["safetensors", "pytorch_model.bin"])
@pytest.mark.parametrize("activation,tied", [("gelu_new", True), ("gelu", False)])
def test_init_from_equals_gpt2lmheadmodel(tmp_path, safetensors, activation, tied):
    hf, directory = hf_gpt2(tmp_path, safetensors=safetensors, activation_function=activation,
                            tie_word_embeddings=tied)
    ours = from_pretrained(directory).eval()
    cfg = ours.config
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.tie_embeddings) == (2, 4, 32, 32, tied)
    assert cfg.mlp == ("gelu_tanh" if activation == "gelu_new" else "gelu")
    assert (cfg.vocab_size, cfg.tokenizer_vocab_size) == (50304, VOCAB)  # padded, the padding masked
    idx = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = hf(idx, labels=idx)
        logits, _ = ours(idx)
        _, loss = ours(idx[:, :-1], idx[:, 1:], return_logits=False)
    assert (logits[..., :VOCAB] - theirs.logits).abs().max() <= 1e-4
    assert torch.isneginf(logits[..., VOCAB:]).all()
    assert abs(loss.item() - theirs.loss.item()) <= 1e-4


def test_first_evaluation_loss_equals_hf_through_load_config(tmp_path):
    """The trainer's path: load_config fills the shape, GPT + load_hf_weights, the evaluation's loss pass."""
    hf, directory = hf_gpt2(tmp_path)
    cfg = load_config(["--model.init_from", str(directory), "--model.dropout=0.0"])
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.mlp, cfg.model.norm) == (2, 32, "gelu_tanh",
                                                                                    "layernorm")
    model = GPT(cfg.model).eval()
    load_hf_weights(model, directory)
    idx = torch.randint(0, VOCAB, (3, 17), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, ours = model(idx[:, :-1], idx[:, 1:], return_logits=False)
        theirs = hf(idx, labels=idx).loss
    assert abs(ours.item() - theirs.item()) <= 1e-4


def test_conflicting_explicit_setting_names_both_values(tmp_path):
    _, directory = hf_gpt2(tmp_path)
    with pytest.raises(ConfigError, match=r"model.n_layer=3 conflicts with model.init_from=.*gives 2"):
        load_config(["--model.init_from", str(directory), "--model.n_layer=3"])
    with pytest.raises(ConfigError, match=r"model.n_layer=12 \(from model.preset\) conflicts"):
        load_config(["--model.init_from", str(directory), "--model.preset=gpt2-124m"])
    with pytest.raises(ConfigError, match=r"model.vocab_size=1000 is smaller than the vocabulary"):
        load_config(["--model.init_from", str(directory), "--model.vocab_size=1000"])
    # equal explicit settings are fine
    cfg = load_config(["--model.init_from", str(directory), "--model.n_layer=2", "--model.norm=layernorm"])
    assert cfg.model.n_layer == 2


def test_init_from_bad_directories(tmp_path):
    with pytest.raises(ConfigError, match="model.init_from=.*no such directory"):
        load_config([f"--model.init_from={tmp_path / 'nope'}"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        load_config([f"--model.init_from={tmp_path / 'empty'}"])
    _, directory = hf_gpt2(tmp_path)
    (directory / "model.safetensors").unlink()
    model = GPT(load_config([f"--model.init_from={directory}"]).model)
    with pytest.raises(ConfigError, match="none of model.safetensors"):
        load_hf_weights(model, directory)


def test_trainer_first_evaluation_equals_gpt2lmheadmodel(tmp_path):
    """train_gpt.build with --model.init_from, then the trainer's evaluation pass: the validation loss equals
    GPT2LMHeadModel's mean loss on the same validation tokens."""
    import train_gpt
    from trainer.distributed import DistInfo
    from trainer.passes import evaluate

    hf, directory = hf_gpt2(tmp_path)
    cfg = load_config([f"--model.init_from={directory}", "--model.dropout=0.0", "--train.eval_tokens=256",
                       "--train.batch_size=4", "--train.micro_batch_size=4", f"--train.out_dir={tmp_path / 'run'}",
                       "--train.device=cpu", "--train.dtype=float32"])
    dist = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    state, val_set, _ = train_gpt.build(cfg, dist)
    ours = evaluate(state.model, val_set, rank=0, world_size=1, micro_batch_size=4, device=dist.device,
                    dtype="float32")
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in val_set.batches(0, 1, 4):
            logits = hf(x).logits
            total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1,
                                                       reduction="sum").item()
            count += int((y != -1).sum())
    assert count == 256 and abs(ours - total / count) <= 1e-4
