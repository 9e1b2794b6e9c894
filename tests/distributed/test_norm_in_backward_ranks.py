"""optim.norm_in_backward at 2 gloo ranks under ddp (DDP communication hook, several buckets) and fsdp (hooks on the
reduce-scattered shards, one all-reduce of the partial sums), and at 4 under hsdp (2 replicas x 2 shards): equal to
the plain step for every optimizer whose step uses the global norm: grad_norm and clip factors to fp32 summation
order (relative <= 1e-6), losses within 1e-4, and step() never calls kernels.global_norm. One torchrun launch per
world size (the multi-process tests are the slow ones): 20 steps for dgclip and unconstrained_clipped_scion, 3 for
the others (the 20-step runs of every one are tests/optim/test_norm_in_backward.py's, in one process)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT, env

pytestmark = pytest.mark.slow

RUNS = {"dgclip": 20, "unconstrained_clipped_scion": 20, "gclip": 3, "normalized_sgd": 3, "clipped_scion": 3,
        "adamw": 3, "muon": 3}
MAX_GRAD_NORM = 0.5  # adamw and muon's clipping threshold in the worker


HSDP_RUNS = {"dgclip": 20, "unconstrained_clipped_scion": 5}  # 4 ranks: 2 replicas x 2 shards


def launch(nproc: int, modes: str, runs: dict) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(REPO_ROOT / "tests" / "distributed" / "norm_in_backward_worker.py"), modes,
           ",".join(f"{name}:{steps}" for name, steps in runs.items())]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-5000:]
    rows = [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return {(row["mode"], row["name"]): row for row in rows}


@pytest.fixture(scope="module")
def results():
    return launch(2, "ddp,fsdp", RUNS)


@pytest.fixture(scope="module")
def hsdp_results():
    return launch(4, "hsdp", HSDP_RUNS)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
@pytest.mark.parametrize("name", list(RUNS))
def test_norm_in_backward_equals_plain_step(results, mode, name):
    check(results[(mode, name)], RUNS[name])


@pytest.mark.parametrize("name", list(HSDP_RUNS))
def test_norm_in_backward_equals_plain_step_under_hsdp(hsdp_results, name):
    """hsdp: the hooks run on the shard after the replica all-reduce; the partial sums join over the shard
    dimension only."""
    check(hsdp_results[("hsdp", name)], HSDP_RUNS[name])


def check(row: dict, steps: int) -> None:
    name = row["name"]
    assert row["global_norm_calls"] == 0, row  # step() reads the gradients once: for the update
    assert row["loss_diff"] <= 1e-4, row
    assert row["grad_norm_rel"] <= 1e-6 and row["clip_factor_rel"] <= 1e-6, row
    if name in ("adamw", "muon"):
        assert row["max_grad_norm"] > MAX_GRAD_NORM, row  # max_grad_norm clipped on some step
    elif steps >= 5:
        assert row["min_clip_factor"] < 1.0, row  # the clipping is active
