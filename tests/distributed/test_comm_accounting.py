"""Communication accounting (gloo, 2 and 4 ranks): the bytes each rank receives per step, per collective, counted at
the collectives of a real step (DDP comm hook, FSDP2's all-gather / reduce-scatter, the optimizer's broadcasts and
all-to-alls), equal trainer.scale.step_bytes's formula for ddp and fsdp, with and without gradient accumulation."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT, env

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("nproc", [2, 4])
def test_bytes_per_step_match_the_formula(tmp_path, nproc):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(REPO_ROOT / "tests" / "distributed" / "comm_accounting_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-5000:]
    rows = [row for r in range(nproc) for row in json.loads((tmp_path / f"rank{r}.json").read_text())]
    assert len(rows) == 3 * nproc
    for row in rows:
        assert row["measured"] == row["formula"], row
        assert all(v > 0 for v in row["measured"].values()), row
    by_mode = {(row["mode"], row["accum"]): row["formula"] for row in rows if row["rank"] == 0}
    # accumulation repeats the all-gathers, never the reduce-scatter
    one, two = by_mode[("fsdp", 1)], by_mode[("fsdp", 2)]
    assert two["all_gather (parameters)"] == 2 * one["all_gather (parameters)"]
    assert two["reduce_scatter (gradients)"] == one["reduce_scatter (gradients)"]
