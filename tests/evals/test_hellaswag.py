"""evals.hellaswag: the HellaSwag jsonl format and its errors, the sum/mean scoring against a float64 reference,
the command line (last line JSON, result file) and 2 ranks == 1 rank."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evals import hellaswag
from evals.hellaswag import Example, HellaSwagFormatError, ending_losses, example_rows, read_jsonl, score

FIXTURE = Path(__file__).parent / "data" / "hellaswag_small.jsonl"
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_fixture_reads_with_int_and_string_labels():
    examples = read_jsonl(FIXTURE)
    assert len(examples) == 8 and [e.label for e in examples] == [0, 2, 1, 3, 0, 1, 2, 0]
    assert all(len(e.endings) == 4 for e in examples) and examples[0].ctx.endswith("He")


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    ('["a"]', "expected a JSON object"),
    ('{"ctx": "a", "endings": ["x", "y"]}', "missing key(s) label"),
    ('{"ctx": "a", "endings": ["x", "y"], "label": 2}', "label must be an index into the 2 endings"),
    ('{"ctx": "a", "endings": ["x", "y"], "label": "one"}', "label must be an index"),
    ('{"ctx": "a", "endings": "x", "label": 0}', "endings must be a list"),
    ('{"ctx": "", "endings": ["x", "y"], "label": 0}', "ctx must be a non-empty string"),
])
def test_a_malformed_line_names_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = FIXTURE.read_text().splitlines()[0]
    path.write_text(f"{good}\n\n{line}\n{good}\n")  # the blank line still counts: the bad one is line 3
    with pytest.raises(HellaSwagFormatError) as err:
        read_jsonl(path)
    assert str(err.value).startswith(f"{path}:3: ") and message in str(err.value)


class Bigram(torch.nn.Module):
    """A model whose next-token logits depend on the current token only: table[idx]."""

    def __init__(self, vocab: int, block_size: int = 32):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, dtype=torch.float64))
        self.config = type("C", (), {"block_size": block_size})()

    def forward(self, idx):
        return self.table[idx], None


def reference_losses(table: torch.Tensor, ctx: list[int], ending: list[int]) -> tuple[float, float]:
    """-log p(ending | ctx) summed and per token, one token at a time, in float64."""
    seq, total = ctx + ending, 0.0
    for pos in range(len(ctx), len(seq)):
        total -= torch.log_softmax(table[seq[pos - 1]], dim=-1)[seq[pos]].item()
    return total, total / len(ending)


def test_ending_losses_match_the_token_by_token_reference():
    torch.manual_seed(0)
    model = Bigram(11)
    words = {"c": [1, 2, 3], " a": [4], " b": [5, 6, 7, 8], " d": [9, 10]}
    example = Example("c", ("a", "b", "d"), label=0)
    tokens, mask = example_rows(example, lambda text: words[text], block_size=32)
    summed, mean = ending_losses(model, tokens, mask)
    for i, ending in enumerate((" a", " b", " d")):
        ref_sum, ref_mean = reference_losses(model.table.detach(), words["c"], words[ending])
        assert summed[i].item() == pytest.approx(ref_sum, rel=1e-12)
        assert mean[i].item() == pytest.approx(ref_mean, rel=1e-12)


def test_sum_and_mean_pick_differently_when_length_matters():
    """A long ending of likely tokens loses on the sum but wins on the mean: acc and acc_norm differ."""
    vocab = 6
    table = torch.zeros(vocab, vocab, dtype=torch.float64)
    table[:, 5] = 1.5  # token 5: p ~ 0.47 after anything (loss 0.75), the others p ~ 0.11 (loss 2.25)
    model = Bigram(vocab)
    model.table.data = table
    words = {"c": [1], " long": [5, 5, 5, 5, 5, 5], " short": [2], " other": [3]}
    examples = [Example("c", ("long", "short", "other"), label=0)]
    result = score(model, examples, lambda text: words[text])
    assert result == {"hellaswag_acc": 0.0, "hellaswag_acc_norm": 1.0, "n": 1}
    examples = [Example("c", ("long", "short", "other"), label=1)]
    assert score(model, examples, lambda text: words[text])["hellaswag_acc"] == 1.0


def test_long_contexts_keep_their_last_tokens():
    example = Example("c", ("a", "b"), label=0)
    words = {"c": list(range(1, 40)), " a": [40, 41], " b": [42]}
    tokens, mask = example_rows(example, lambda text: words[text], block_size=8)
    assert tokens.shape == (2, 9)  # block + 1 tokens: 8 inputs, 8 targets
    assert tokens[0].tolist() == list(range(33, 40)) + [40, 41] and mask[0].sum() == 2
    assert tokens[1].tolist() == list(range(32, 40)) + [42] and mask[1].tolist() == [False] * 8 + [True]


def run_cli(capsys, *args):
    code = hellaswag.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_prints_one_json_line_last_and_writes_it_under_the_run(run_dir, capsys):
    code, out, err = run_cli(capsys, "--run", str(run_dir), "--data", str(FIXTURE), "--device", "cpu")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result) == {"hellaswag_acc", "hellaswag_acc_norm", "n"} and result["n"] == 8
    assert all(0 <= result[k] <= 1 and math.isclose(result[k] * 8, round(result[k] * 8))
               for k in ("hellaswag_acc", "hellaswag_acc_norm"))
    saved = json.loads((run_dir / "evals" / "hellaswag_step_0000003.json").read_text())
    assert {k: saved[k] for k in result} == result and saved["step"] == 3
    assert "hellaswag" in err  # the progress bar
    code, out, _ = run_cli(capsys, "--run", str(run_dir), "--data", str(FIXTURE), "--device", "cpu", "--limit", "3",
                           "--no-progress")
    assert json.loads(out.strip().splitlines()[-1])["n"] == 3


def test_cli_errors(run_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ctx": "a"}\n')
    code, _, err = run_cli(capsys, "--run", str(run_dir), "--data", str(bad))
    assert code == 2 and f"{bad}:1: missing key(s) endings, label" in err
    code, _, err = run_cli(capsys, "--run", str(run_dir), "--data", str(tmp_path / "nope.jsonl"))
    assert code == 2 and "no such file" in err


@pytest.mark.slow
def test_two_ranks_give_the_one_rank_result(run_dir):
    def run(*launcher):
        cmd = [sys.executable, *launcher, "-m", "evals.hellaswag", "--run-dir", str(run_dir), "--data", str(FIXTURE),
               "--device", "cpu", "--no-progress"]
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                              env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout.strip().splitlines()

    one = run()
    two = run("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    assert len(two) == 1 and json.loads(two[-1]) == json.loads(one[-1])  # rank 0 alone prints


def test_hub_source_goes_through_datasets_lazily(monkeypatch):
    """A source that is not a file is loaded with `datasets` (imported only then); rows like Rowan/hellaswag's."""
    import types
    calls = []

    def load_dataset(name, split):
        calls.append((name, split))
        return [{"ctx": "A man opens a door.", "endings": ["He walks in.", "It eats."], "label": "0"}]

    from data.prepare import sources
    monkeypatch.setattr(sources, "hub_unreachable", lambda: None)  # as when online
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    examples = hellaswag.load_examples("Rowan/hellaswag")
    assert calls == [("Rowan/hellaswag", "validation")] and examples[0].label == 0

    def offline(name, split):
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(hellaswag.ConfigError, match="not a local file and not loadable from the hub.*no network"):
        hellaswag.load_examples("Rowan/hellaswag")


def test_unreachable_hub_fails_at_once_naming_the_local_file_to_pass(monkeypatch):
    """Offline, the hub id fails before `datasets` retries (it took 38 s of retry lines), saying which file to pass;
    with HF_HUB_OFFLINE=1 the datasets cache is asked without a probe."""
    import types
    from data.prepare import sources
    calls = []
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(
        load_dataset=lambda name, split: calls.append(name) or [{"ctx": "c", "endings": ["a", "b"], "label": 1}]))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(sources, "hub_unreachable", lambda: "huggingface.co does not resolve")
    with pytest.raises(hellaswag.ConfigError) as err:
        hellaswag.load_examples("Rowan/hellaswag")
    assert calls == []
    for part in ("--data Rowan/hellaswag", "huggingface.co does not resolve", "--data PATH/hellaswag_val.jsonl",
                 "rowanz/hellaswag/master/data/hellaswag_val.jsonl", "HF_HUB_OFFLINE=1"):
        assert part in str(err.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hellaswag.load_examples("Rowan/hellaswag")[0].label == 1 and calls == ["Rowan/hellaswag"]


def test_hub_probe_reports_an_unresolvable_host_without_waiting(monkeypatch):
    import socket
    import time
    from data.prepare import sources

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    for name in sources.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    started = time.perf_counter()
    assert sources.hub_unreachable().endswith("does not resolve") and time.perf_counter() - started < 5
