"""Communication accounting (gloo, 2 and 4 ranks): the bytes each rank receives per step, per collective, counted at
the collectives of a real step (DDP comm hook, FSDP2's all-gather / reduce-scatter, the optimizer's broadcasts and
all-to-alls, hsdp's all-reduce across replicas), equal trainer.scale.step_bytes's formula for ddp, fsdp and (at 4
ranks, 2 replicas x 2 shards) hsdp at accumulation 1 and 4 (reduce-scatter per micro-batch, the default, and
train.fsdp_defer_grad_sync)."""
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
    assert len(rows) == (8 if nproc == 4 else 5) * nproc
    for row in rows:
        assert row["measured"] == row["formula"], row
        assert all(v > 0 for v in row["measured"].values()), row
    by_case = {(row["mode"], row["accum"], row["defer"]): row["formula"] for row in rows if row["rank"] == 0}
    assert by_case[("ddp", 4, False)] == by_case[("ddp", 1, False)]  # one all-reduce per step (no_sync before)
    one, each, deferred = by_case[("fsdp", 1, False)], by_case[("fsdp", 4, False)], by_case[("fsdp", 4, True)]
    for case in (each, deferred):  # accumulation repeats the all-gathers ...
        assert case["all_gather (parameters)"] == 4 * one["all_gather (parameters)"]
    # ... and, by default, the reduce-scatter (sharded gradients); deferred sync reduce-scatters once
    assert each["reduce_scatter (gradients)"] == 4 * one["reduce_scatter (gradients)"]
    assert deferred["reduce_scatter (gradients)"] == one["reduce_scatter (gradients)"]
    if nproc == 4:  # hsdp (2 x 2): within a shard group as fsdp(2), plus one all-reduce across replicas per step
        one, each, deferred = by_case[("hsdp", 1, False)], by_case[("hsdp", 4, False)], by_case[("hsdp", 4, True)]
        assert each["reduce_scatter (gradients)"] == 4 * one["reduce_scatter (gradients)"]
        assert deferred["reduce_scatter (gradients)"] == one["reduce_scatter (gradients)"]
        for case in (each, deferred):
            assert case["all_reduce (gradients across replicas)"] == one["all_reduce (gradients across replicas)"]
