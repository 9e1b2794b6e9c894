"""Samples and HellaSwag during training (train.sample_every, train.hellaswag_every with data.hellaswag)."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs.base import ConfigError
from configs.schema import load_config
from tests.helpers import TINY, metrics, run_train

FIXTURE = str(Path(__file__).parent / "data" / "hellaswag_small.jsonl")


def test_hellaswag_every_needs_data():
    with pytest.raises(ConfigError, match=r"train\.hellaswag_every=5 needs data\.hellaswag"):
        load_config(["--config", TINY, "--train.hellaswag_every=5"])
    load_config(["--config", TINY, "--train.hellaswag_every=5", f"--data.hellaswag={FIXTURE}"])


@pytest.mark.slow
def test_samples_and_hellaswag_go_to_the_metrics(tmp_path):
    proc = run_train(f"--train.out_dir={tmp_path}", "--train.steps=4", "--train.sample_every=2",
                     "--train.sample_prompt=The os module", "--train.sample_tokens=6", "--train.hellaswag_every=2",
                     f"--data.hellaswag={FIXTURE}")
    assert "sample at step 2: 'The os module" in proc.stdout and "hellaswag at step 4: acc" in proc.stdout
    rows = {r["step"]: r for r in metrics(tmp_path)}
    for step in (2, 4):
        assert rows[step]["sample"].startswith("The os module")
        assert 0 <= rows[step]["hellaswag_acc"] <= 1 and 0 <= rows[step]["hellaswag_acc_norm"] <= 1
    assert "sample" not in rows[1] and "hellaswag_acc" not in rows[3]


@pytest.mark.slow
def test_a_malformed_hellaswag_file_stops_the_run_before_training(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ctx": "a", "endings": ["x", "y"], "label": 7}\n')
    proc = run_train(f"--train.out_dir={tmp_path / 'run'}", "--train.steps=2", "--train.hellaswag_every=1",
                     f"--data.hellaswag={bad}", check=False)
    assert proc.returncode != 0 and f"{bad}:1: label must be an index" in proc.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
