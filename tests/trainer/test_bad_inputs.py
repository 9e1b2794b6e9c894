"""Bad inputs of issue 20, each one clear line before anything is written: an empty train.out_dir, non-finite float
settings, a block size no machine can hold, a missing include, a full disk under metrics.jsonl."""

from __future__ import annotations

import errno
import os

import pytest

import train_gpt
from configs.schema import load_config
from tests.helpers import FAST, TINY
from trainer.metrics import MetricsWriter


@pytest.mark.parametrize("flag, message", [
    ("--train.out_dir=", "train.out_dir must be a non-empty path (an unset shell variable?), got ''"),
    ("--train.out_dir=  ", "train.out_dir must be a non-empty path"),
    ("--optim.lr=inf", "optim.lr: expected a finite number, got inf"),
    ("--optim.lr=nan", "optim.lr: expected a finite number, got nan"),
    ("--optim.lr=-inf", "optim.lr: expected a finite number, got -inf"),
    ("--train.warmdown_frac=nan", "train.warmdown_frac: expected a finite number, got nan"),
    ("--model.block_size=100000000", "model.block_size=100000000 with train.micro_batch_size="),
])
def test_each_bad_setting_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, flag, message):
    monkeypatch.chdir(tmp_path)  # an empty out_dir would have written into the current directory
    args = ["--config", TINY, *FAST, "--train.steps=2"]
    if "out_dir" not in flag:
        args.append(f"--train.out_dir={tmp_path / 'run'}")
    assert train_gpt.main([*args, flag]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("config error: ") and message in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_the_memory_refusal_names_the_parts_and_the_machine(capsys):
    assert train_gpt.main(["--config", TINY, "--model.block_size=100000000", "--train.steps=1"]) == 2
    err = capsys.readouterr().err
    assert "activations of one micro-batch" in err and "RoPE tables" in err and "GiB" in err
    assert "lower model.block_size or train.micro_batch_size" in err


def test_a_missing_include_names_the_toml_that_included_it(tmp_path):
    (tmp_path / "top.toml").write_text('include = ["mid.toml"]\n')
    (tmp_path / "mid.toml").write_text('include = ["gone.toml"]\n')
    with pytest.raises(Exception, match=r"'.*gone\.toml' does not exist \(included by '.*mid\.toml'\)"):
        load_config(["--config", str(tmp_path / "top.toml")])


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_under_metrics_names_metrics_jsonl(tmp_path):
    (tmp_path / "metrics.jsonl").symlink_to("/dev/full")  # every write fails with ENOSPC
    with pytest.raises(OSError) as caught:
        MetricsWriter(tmp_path, enabled=True).write({"step": 1, "train_loss": 1.0})
    assert caught.value.errno == errno.ENOSPC
    cfg = load_config(["--config", TINY, f"--train.out_dir={tmp_path}"])
    line = train_gpt.failure_line(caught.value, cfg)
    assert line.startswith(f"no space left on device writing {tmp_path / 'metrics.jsonl'};"), line
