"""The commands: python -m data.fineweb (incl. a real SIGKILL and resume) and python -m data.inspect."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data import fineweb
from data import inspect as shard_inspect
from data import shards

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--shard-tokens", "3k", "--val-tokens", "2000", "--workers", "0", "--no-progress", "--prefix", "t"]


@pytest.mark.parametrize("text, value", [("100000000", 10**8), ("1e8", 10**8), ("100M", 10**8), ("10_000", 10_000),
                                         ("2.5k", 2500), ("10B", 10**10)])
def test_parse_count(text, value):
    assert fineweb.parse_count(text) == value


@pytest.mark.parametrize("text", ["ten", "1.5", "-3", "1e8x"])
def test_parse_count_rejects(text):
    with pytest.raises(Exception, match="token count|whole number"):
        fineweb.parse_count(text)


def test_hub_sources_default_to_sample_10bt():
    args = fineweb.build_parser().parse_args(["--out", "x"])
    config = fineweb.config_from_args(args)
    assert config.source.source == "HuggingFaceFW/fineweb" and config.source.name == "sample-10BT"
    assert config.shard_tokens == 10**8 and config.val_tokens == 10**8 and config.source.streaming


def test_command_prepares_local_jsonl_and_prints_summary(tmp_path, jsonl_source, capsys):
    assert fineweb.main(["--source", str(jsonl_source), "--out", str(tmp_path / "out"), *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "done:" in printed and "val      1 shards           2,000 tokens" in printed
    assert shards.list_shards(tmp_path / "out", "train")


def test_sample_option_with_local_source_is_an_error(tmp_path, jsonl_source, capsys):
    code = fineweb.main(["--source", str(jsonl_source), "--sample", "sample-10BT", "--out", str(tmp_path / "o")])
    assert code == 2 and "--sample applies to hub datasets" in capsys.readouterr().err


_SLOW_DRIVER = """
import sys, time
import data.prepare.tokenize as tokenize
original = tokenize.tokenize_documents
def slow(texts):
    time.sleep(0.15)
    return original(texts)
tokenize.tokenize_documents = slow
from data.fineweb import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_gives_byte_identical_shards(tmp_path, jsonl_source):
    args = ["--source", str(jsonl_source), *SMALL, "--batch-docs", "4"]
    assert fineweb.main([*args, "--out", str(tmp_path / "straight")]) == 0

    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen([sys.executable, "-c", _SLOW_DRIVER, *args, "--out", str(out)], cwd=REPO_ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    progress_file = out / "progress.json"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if progress_file.exists() and len(json.loads(progress_file.read_text())["shards"]) >= 3:
                break
            time.sleep(0.02)
        assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()}"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    progress = json.loads(progress_file.read_text())
    assert not progress["finished"]

    assert fineweb.main([*args, "--out", str(out)]) == 0
    straight = {p.name: p.read_bytes() for p in (tmp_path / "straight").glob("*.bin")}
    resumed = {p.name: p.read_bytes() for p in out.glob("*.bin")}
    assert resumed == straight


def test_inspect_shard_file(tmp_path, jsonl_source, capsys):
    fineweb.main(["--source", str(jsonl_source), "--out", str(tmp_path / "out"), *SMALL])
    capsys.readouterr()
    assert shard_inspect.main([str(tmp_path / "out" / "t_val_000000.bin"), "--tokens", "8"]) == 0
    printed = capsys.readouterr().out
    assert "magic 20240520, version 1, 2,000 tokens" in printed
    assert "first 8 tokens: [50256," in printed and "decoded: '<|endoftext|>" in printed


def test_inspect_directory_flags_invalid_shard(tmp_path, jsonl_source, capsys):
    out = tmp_path / "out"
    fineweb.main(["--source", str(jsonl_source), "--out", str(out), *SMALL])
    capsys.readouterr()
    assert shard_inspect.main([str(out)]) == 0
    printed = capsys.readouterr().out
    assert "val  : 1 shards, 2,000 tokens" in printed and "preparation: finished" in printed
    broken = out / "t_train_000002.bin"
    broken.write_bytes(broken.read_bytes()[:-2])
    assert shard_inspect.main([str(out)]) == 1
    assert f"INVALID {broken}: truncated file" in capsys.readouterr().out


def test_inspect_empty_directory_fails(tmp_path, capsys):
    assert shard_inspect.main([str(tmp_path)]) == 1
    assert "no *_train_*.bin" in capsys.readouterr().out


def test_progress_bar_shows_tokens_rate_documents_and_shards(tmp_path, jsonl_source, capsys):
    args = [a for a in SMALL if a != "--no-progress"]
    assert fineweb.main(["--source", str(jsonl_source), "--out", str(tmp_path / "out"), *args]) == 0
    err = capsys.readouterr().err
    assert "tok/s" in err and "docs=120" in err and "shards=" in err


def test_help_shows_defaults_only_where_they_mean_something():
    """Flags (--no-progress) store True when absent; "(default: True)" would read as if they were on."""
    text = fineweb.build_parser().format_help()
    assert "default: True" not in text and "default: False" not in text and "default: None" not in text
    assert "(default: 256)" in text and "the CPU cores less one" in text


def test_other_options_are_refused_naming_overwrite_which_rebuilds(tmp_path, jsonl_source, capsys):
    out = str(tmp_path / "out")
    assert fineweb.main(["--source", str(jsonl_source), "--out", out, *SMALL]) == 0
    capsys.readouterr()
    other = [*SMALL[:1], "2k", *SMALL[2:]]  # --shard-tokens 2k
    assert fineweb.main(["--source", str(jsonl_source), "--out", out, *other]) == 2
    err = capsys.readouterr().err
    assert "shard_tokens: 3000 there, 2000 now" in err and "--overwrite" in err
    assert fineweb.main(["--source", str(jsonl_source), "--out", out, *other, "--overwrite"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["prepare"]["shard_tokens"] == 2000


def test_a_corpus_smaller_than_the_validation_shard_exits_2_with_the_hint(tmp_path, capsys):
    source = tmp_path / "small.jsonl"
    source.write_text(json.dumps({"text": "a few words of text"}) + "\n")
    args = ["--source", str(source), "--out", str(tmp_path / "out"), "--workers", "0", "--no-progress"]
    assert fineweb.main(args) == 2
    err = capsys.readouterr().err
    assert "no train shard could be written" in err and "--val-tokens 1 (a tenth of it)" in err
    assert fineweb.main([*args, "--val-tokens", "1"]) == 0


@pytest.mark.parametrize("sub", ["", "shards"])
def test_out_that_is_a_file_is_one_line(tmp_path, capsys, sub):
    existing = tmp_path / "taken"
    existing.write_text("not a directory")
    out = existing / sub if sub else existing
    assert fineweb.main(["--source", str(tmp_path), "--out", str(out), *SMALL]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --out {out} ") and "not a directory" in err and len(err.splitlines()) == 1
    assert existing.read_text() == "not a directory"
