"""optim.sharding: row splits of FSDP2 DTensors, one-collective partial sums, whole tensors by ownership (gloo)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from optim import sharding
from tests.helpers import REPO_ROOT, env


def test_chunk_sizes_follow_torch_chunk():
    import torch

    for rows in range(0, 12):
        for world in range(1, 6):
            sizes = sharding.chunk_sizes(rows, world)
            chunks = torch.arange(rows).chunk(world) if rows else []
            expected = [len(c) for c in chunks] + [0] * (world - len(chunks))
            assert list(sizes) == expected, (rows, world)


def test_owners_balance_cost_and_are_deterministic():
    shapes = [(768, 768)] * 4 + [(3072, 768)] * 2 + [(768,)] * 3
    owners = sharding.assign_owners(shapes, 2)
    assert owners == sharding.assign_owners(shapes, 2)
    assert owners[4] != owners[5]  # the two expensive matrices go to different ranks
    assert set(owners) == {0, 1}
    assert sharding.assign_owners(shapes, 1) == [0] * len(shapes)


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [2, 3])
def test_primitives_match_whole_tensors(nproc):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(REPO_ROOT / "tests" / "distributed" / "sharding_worker.py")]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count(": ok") == nproc
