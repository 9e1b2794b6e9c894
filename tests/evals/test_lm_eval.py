"""lm-evaluation-harness on our model: the three request types against direct computations with the model, and
`python -m evals.lm_eval` end to end on the offline task evals/lm_eval_tasks/hellaswag_small.yaml, its numbers
checked against evals.hellaswag and a direct per-character / per-byte normalisation, alone and under torchrun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from data.tokenizer import EOT, gpt2_encoding
from evals.hellaswag import read_jsonl, score
from model import GPT, ModelConfig
from model.generate import generate
from tests.evals.conftest import write_run
from tests.helpers import REPO_ROOT as REPO, env, free_port, require

TASKS = REPO / "evals" / "lm_eval_tasks"
DATA = REPO / "tests" / "evals" / "data" / "hellaswag_small.jsonl"


def gptlm(batch_size=2, **model):
    require("lm_eval")
    from evals.lm_eval_model import GPTLM

    torch.manual_seed(0)
    settings = dict(n_layer=2, n_head=2, n_embd=32, block_size=24, norm="rmsnorm", pos_emb="rope", mlp="relu2")
    return GPTLM(GPT(ModelConfig(**{**settings, **model})), batch_size=batch_size)


def requests(*args):
    return [SimpleNamespace(args=a) for a in args]


def direct_logprob(model, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    tokens = torch.tensor([context + continuation])
    with torch.no_grad():
        logits, _ = model(tokens[:, :-1])
    logp = F.log_softmax(logits[0, len(context) - 1:], dim=-1)
    target = torch.tensor(continuation)
    return logp[torch.arange(len(continuation)), target].sum().item(), bool((logp.argmax(-1) == target).all())


def test_loglikelihood_equals_direct_computation_at_any_batch_size():
    lm = gptlm(batch_size=3)
    enc = gpt2_encoding().encode_ordinary
    pairs = [("The cat sat on", " the mat."), ("Hello", " world"), ("A", " b c d e f g"), ("", "Start of text")]
    got = lm.loglikelihood(requests(*pairs), disable_tqdm=True)
    one_by_one = gptlm(batch_size=1).loglikelihood(requests(*pairs), disable_tqdm=True)
    assert [g for _, g in got] == [g for _, g in one_by_one]
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in one_by_one], abs=1e-4)
    for (ctx, cont), (ll, greedy) in zip(pairs, got):
        ctx_ids = enc(ctx) if ctx else [EOT]
        ll_ref, greedy_ref = direct_logprob(lm.model, ctx_ids, enc(cont))
        assert ll == pytest.approx(ll_ref, abs=1e-4) and greedy == greedy_ref


def test_loglikelihood_of_a_greedy_continuation_is_greedy_and_long_rows_keep_their_end():
    lm = gptlm()
    prompt = gpt2_encoding().encode_ordinary("Once upon a time")
    out = generate(lm.model, torch.tensor([prompt]), 4, temperature=0)[0].tolist()
    (_, greedy), = lm.loglikelihood(requests(("Once upon a time", lm.tok_decode(out[len(prompt):]))),
                                    disable_tqdm=True)
    assert greedy
    long_ctx = " word" * 40  # past block_size 24: only the last 25 tokens are read
    ids = gpt2_encoding().encode_ordinary(long_ctx + " end")
    (ll, _), = lm.loglikelihood(requests((long_ctx, " end")), disable_tqdm=True)
    assert ll == pytest.approx(direct_logprob(lm.model, ids[-25:-1], ids[-1:])[0], abs=1e-4)


def test_loglikelihood_rolling_sums_every_token_after_eot():
    lm = gptlm()
    text = "short text that fits"
    ids = gpt2_encoding().encode_ordinary(text)
    (total,) = lm.loglikelihood_rolling(requests((text,)), disable_tqdm=True)
    assert total == pytest.approx(direct_logprob(lm.model, [EOT], ids)[0], abs=1e-4)
    long = " ".join(f"w{i}" for i in range(40))  # several windows of block_size 24
    long_ids = gpt2_encoding().encode_ordinary(long)
    assert len(long_ids) > 2 * 24
    (total,) = lm.loglikelihood_rolling(requests((long,)), disable_tqdm=True)
    # lm-eval's windows: EOT + the first 23 tokens predict tokens 0..23, then each window of 24 tokens predicts
    # the 24 tokens after the previous window, the last one reading a full window of context
    expected, done = direct_logprob(lm.model, [EOT], long_ids[:24])[0], 24
    while done < len(long_ids):
        end = min(done + 24, len(long_ids))
        expected += direct_logprob(lm.model, long_ids[end - 25:done], long_ids[done:end])[0]
        done = end
    assert total == pytest.approx(expected, abs=1e-3)


def test_generate_until_is_greedy_generation_cut_at_the_stop_string():
    lm = gptlm()
    prompt = "The answer is"
    ids = gpt2_encoding().encode_ordinary(prompt)
    full = lm.tok_decode(generate(lm.model, torch.tensor([ids]), 8, temperature=0)[0, len(ids):].tolist())
    (text,) = lm.generate_until(requests((prompt, {"until": [], "max_gen_toks": 8})), disable_tqdm=True)
    assert text == full.split("<|endoftext|>")[0]
    stop = full[2:4]
    (cut,) = lm.generate_until(requests((prompt, {"until": [stop], "max_gen_toks": 8})), disable_tqdm=True)
    assert cut == full.split(stop)[0]


def test_missing_lm_eval_is_one_clear_error(monkeypatch, tmp_path, capsys):
    from evals import lm_eval as cli

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    assert cli.main(["--run", str(tmp_path), "--tasks", "hellaswag"]) == 2
    assert "pip install -e '.[eval]'" in capsys.readouterr().err


def direct_hellaswag(model) -> dict[str, float]:
    """acc by summed log-likelihood, acc_norm per character and acc_bytes per UTF-8 byte of the ending (lm-eval's
    definitions), computed with our model on ctx + " " + ending."""
    enc = gpt2_encoding().encode_ordinary
    hits = {"acc": 0, "acc_norm": 0, "acc_bytes": 0}
    examples = read_jsonl(DATA)
    for ex in examples:
        lls = torch.tensor([direct_logprob(model, enc(ex.ctx), enc(" " + e))[0] for e in ex.endings])
        chars = torch.tensor([float(len(e)) for e in ex.endings])
        nbytes = torch.tensor([float(len(e.encode())) for e in ex.endings])
        hits["acc"] += int(lls.argmax() == ex.label)
        hits["acc_norm"] += int((lls / chars).argmax() == ex.label)
        hits["acc_bytes"] += int((lls / nbytes).argmax() == ex.label)
    return {k: v / len(examples) for k, v in hits.items()}


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_cli_numbers_equal_direct_computation(tmp_path, capsys):
    require("lm_eval")
    from evals.lm_eval import main

    model = write_run(tmp_path, step=5, seed=3).eval()
    assert main(["--run", str(tmp_path), "--tasks", "hellaswag_small", "--include-path", str(TASKS),
                 "--bootstrap-iters", "0", "--batch-size", "5"]) == 0
    out = last_json(capsys.readouterr().out)
    metrics = out["hellaswag_small"]
    direct = direct_hellaswag(model)
    for key in ("acc", "acc_norm", "acc_bytes"):
        assert metrics[key] == pytest.approx(direct[key]), key
    ours = score(model, read_jsonl(DATA), gpt2_encoding().encode_ordinary)
    assert metrics["acc"] == pytest.approx(ours["hellaswag_acc"])  # same sum over the same tokens
    record = json.loads((tmp_path / "evals" / "lm_eval_step_0000005.json").read_text())
    assert record["metrics"] == out and record["step"] == 5 and record["n_samples"]["hellaswag_small"]

    with pytest.raises(SystemExit):
        main(["--run", str(tmp_path), "--tasks", "hellaswag_small", "--include-path", str(tmp_path / "nope")])
    assert main(["--run", str(tmp_path), "--tasks", "no_such_task", "--include-path", str(TASKS)]) == 2
    assert "unknown lm-eval task(s) no_such_task" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_ranks_share_the_requests(tmp_path):
    require("lm_eval")
    write_run(tmp_path, step=2, seed=4, pos_emb="learned", norm="layernorm", mlp="gelu_tanh", qk_norm=False)
    args = ["--run-dir", str(tmp_path), "--tasks", "hellaswag_small", "--include-path", str(TASKS),
            "--bootstrap-iters", "0", "--device", "cpu"]
    single = subprocess.run([sys.executable, "-m", "evals.lm_eval", *args, "--out", str(tmp_path / "one.json")],
                            cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={free_port()}", "-m", "evals.lm_eval", *args],
                         cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert last_json(two.stdout) == last_json(single.stdout)
    assert "on 2 rank(s)" in two.stderr
