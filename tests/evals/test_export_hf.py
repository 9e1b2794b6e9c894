"""`python -m evals.export_hf`: GPT-2 settings load as transformers' GPT2LMHeadModel with no code of ours, the
modern block through its exported modeling file (trust_remote_code); logits equal ours (fp32 <= 1e-4, float64
<= 1e-10); the tokenizer files encode as tiktoken's GPT-2."""

from __future__ import annotations

import json

import pytest
import torch

from data.tokenizer import VOCAB_SIZE, gpt2_encoding
from evals.export_hf import main
from tests.evals.conftest import write_run
from tests.helpers import require

GPT2_CLASSIC = dict(norm="layernorm", pos_emb="learned", qk_norm=False, mlp="gelu", bias=True)
SETTINGS = {
    "gpt2-gelu-tied": GPT2_CLASSIC,
    "gpt2-gelu_tanh-untied-nobias": {**GPT2_CLASSIC, "mlp": "gelu_tanh", "tie_embeddings": False, "bias": False},
    "modern": dict(norm="rmsnorm", pos_emb="rope", qk_norm=True, mlp="relu2", bias=False, tie_embeddings=False),
    "modern-tied-no-gains": dict(norm="rmsnorm", pos_emb="rope", qk_norm=True, mlp="relu2", bias=False,
                                 norm_affine=False),
    "layernorm-rope-head_dim-gelu_tanh": dict(norm="layernorm", pos_emb="rope", qk_norm=False, mlp="gelu_tanh",
                                              bias=True, head_dim=8, mlp_ratio=3),
}


def perturbed_run(tmp_path, settings):
    """A run whose checkpoint has non-trivial biases and gains (not the init's 0 and 1)."""
    model = write_run(tmp_path / "run", step=3, **settings)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    from configs.base import to_dict
    from configs.schema import Config
    from trainer import checkpoint

    checkpoint.save(tmp_path / "run", 4, {"step": 4, "model": model.state_dict(),
                                          "config": to_dict(Config(model=model.config))}, keep=2)
    return model.eval()


@pytest.mark.parametrize("name", SETTINGS)
def test_export_logits_equal_ours(tmp_path, name, capsys):
    transformers = require("transformers")
    ours = perturbed_run(tmp_path, SETTINGS[name])
    out = tmp_path / "hf"
    assert main(["--run", str(tmp_path / "run"), "--out", str(out)]) == 0
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "vocab.json", "merges.txt"} <= files
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == VOCAB_SIZE
    idx = torch.randint(0, VOCAB_SIZE, (2, 20), generator=torch.Generator().manual_seed(0))
    if name.startswith("gpt2"):
        assert config["architectures"] == ["GPT2LMHeadModel"] and "modeling_clipgpt.py" not in files
        load = lambda **kw: transformers.GPT2LMHeadModel.from_pretrained(out, **kw)  # noqa: E731
    else:
        assert "modeling_clipgpt.py" in files
        load = lambda **kw: transformers.AutoModelForCausalLM.from_pretrained(  # noqa: E731
            out, trust_remote_code=True, **kw)
    theirs = load().eval()
    with torch.no_grad():
        assert (theirs(idx).logits - ours(idx)[0][..., :VOCAB_SIZE]).abs().max() <= 1e-4
        theirs64 = load(dtype=torch.float64).eval()
        assert (theirs64(idx).logits - ours.double()(idx)[0][..., :VOCAB_SIZE]).abs().max() <= 1e-10
    assert "exported" in capsys.readouterr().out


def test_exported_tokenizer_encodes_as_tiktoken(tmp_path):
    transformers = require("transformers")
    from data.hf_tokenizer import write_tokenizer_files

    write_tokenizer_files(tmp_path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = ("Hello world! It's a test:\n\n  indented\tcode(x) = 3.14159 ... naïve café 日本語 🙂 "
            "<|endoftext|> don't  'quoted' ÆØÅ \u00a0nbsp")
    assert tokenizer(text)["input_ids"] == gpt2_encoding().encode(text, allowed_special="all")
    assert tokenizer.eos_token_id == 50256 and len(tokenizer) == VOCAB_SIZE
