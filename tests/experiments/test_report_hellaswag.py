"""experiments.report plots HellaSwag accuracy logged during training, and ignores text samples in the metrics."""
from __future__ import annotations

import json

import pytest

from tests.experiments.fake_runs import write_run

pytest.importorskip("matplotlib")


def add_looks(run_dir, every: int = 5) -> None:
    path = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for r in records:
        if r["step"] % every == 0:
            r.update(hellaswag_acc=0.25 + r["step"] / 100, hellaswag_acc_norm=0.26 + r["step"] / 100,
                     sample="The os module provides")
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")


def test_report_adds_the_hellaswag_figure_only_when_logged(tmp_path):
    from experiments.report import write_report

    plain = write_report([write_run(tmp_path / "adamw")], tmp_path / "r1")
    assert "![HellaSwag" not in plain.read_text() and not (tmp_path / "r1" / "hellaswag.png").exists()
    add_looks(tmp_path / "adamw")
    report = write_report([tmp_path / "adamw", write_run(tmp_path / "sgd", optim="sgd")], tmp_path / "r2")
    assert "![HellaSwag accuracy" in report.read_text()
    assert (tmp_path / "r2" / "hellaswag.png").stat().st_size > 1000
