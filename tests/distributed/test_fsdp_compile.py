"""The whole model compiled under fsdp (2 ranks, gloo): every block, the root's stem and its tail (final norm, head,
chunked loss) are graphs without breaks; 10 steps with accumulation 2 and two evaluations compile the training
graphs at the first step and the evaluation graphs at the first evaluation, nothing after (as the ddp path's
tests/trainer/test_eval_compile.py)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT, env

pytestmark = pytest.mark.slow


def test_fsdp_compiles_once_without_graph_breaks(tmp_path):
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO_ROOT / "tests" / "distributed" / "compile_worker.py"), str(out), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-5000:]
    result = json.loads(out.read_text())
    assert result["graph_breaks"] == 0 and result["recompiles"] == 0, result
    graphs = result["graphs_per_step"]
    # training: the stem, one block graph shared by both blocks, the tail; the first evaluation (step 5, no grad)
    # adds its own three; steps 6-10 and the second evaluation compile nothing
    assert graphs[:4] == [3] * 4 and graphs[4:] == [6] * 6, graphs
    assert result["compiled_parts"] == ["function", "function"]  # stem and tail replaced by their compiled forms
