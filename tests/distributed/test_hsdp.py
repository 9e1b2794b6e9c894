"""train.parallel='hsdp' (FSDP2 on a 2-D replicate x shard mesh, gloo): at 4 ranks in 2 shard groups of 2, every
optimizer's sharded step equals one process, with and without gradient accumulation, holding about half the
parameters and optimizer state per rank; a run moves hsdp(4) -> fsdp(2) -> one process -> hsdp(4, as two torchrun
"nodes" of 2 ranks: the shard degree defaults to the local world size) through its checkpoints with the state
loaded bitwise as saved, hsdp writing each shard once; under fsdp(2) with accumulation 4 each rank holds half the
gradient bytes of one process (whole ones with train.fsdp_defer_grad_sync)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.helpers import FAST, REPO_ROOT, TINY, env, free_port

pytestmark = pytest.mark.slow

OPTIMIZERS = ["adamw", "dgclip", "unconstrained_clipped_scion", "muon"]


def launch(nproc: int, script: str, *args: str, nnodes: int = 1, timeout: int = 900) -> subprocess.CompletedProcess:
    """``script`` under torchrun (``nnodes`` launches of ``nproc`` ranks on 127.0.0.1 standing in for nodes), or
    alone when nproc is 1; returns the (first) launch's process after checking that every launch succeeded."""
    rdzv = ("--standalone",) if nnodes == 1 else (
        f"--nnodes={nnodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{free_port()}", "--rdzv_id=hsdp")
    torchrun = [sys.executable, "-m", "torch.distributed.run", *rdzv, f"--nproc_per_node={nproc}"]
    cmd = [*(torchrun if nproc > 1 else [sys.executable]), str(REPO_ROOT / "tests" / "distributed" / script), *args]
    procs = [subprocess.Popen(cmd, cwd=REPO_ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(nnodes)]
    outputs = [p.communicate(timeout=timeout) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, out[-2000:] + err[-5000:]
    return subprocess.CompletedProcess(cmd, 0, *outputs[0])


def test_hsdp_optimizers_equal_one_process():
    """6 steps of each optimizer at accumulation 1 and 2 (the trainer's per-micro-batch reduce-scatter, the
    all-reduce across the 2 replicas deferred to the last micro-batch), fp32 Newton-Schulz."""
    proc = launch(4, "fsdp_worker.py", ",".join(OPTIMIZERS), "shard=2", "accum=1,2", "steps=6")
    rows = [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert sorted((r["name"], r["accum"]) for r in rows) == sorted((n, a) for n in OPTIMIZERS for a in (1, 2))
    for row in rows:
        tol = 1e-5 if row["name"] in ("muon", "unconstrained_clipped_scion") else 1e-3
        assert row["moved"] > 1e-3, row
        assert row["loss_diff"] < tol and row["param_diff"] < tol and row["stat_diff"] < tol, row
        assert row["param_bytes_ratio"] <= 0.55 and row["state_bytes_ratio"] <= 0.55, row


HOP_ARGS = ("--config", TINY, *FAST, "--train.steps=8", "--train.batch_size=8", "--train.micro_batch_size=1",
            "--model.block_size=32", "--optim.name=muon", "--optim.ns_dtype=float32", "--train.keep_checkpoints=4")
HSDP = ("--train.parallel=hsdp", "--train.shard_degree=2")


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_checkpoint_moves_hsdp_fsdp_one_process_hsdp_bitwise(tmp_path):
    out = f"--train.out_dir={tmp_path / 'run'}"
    hops = [(4, ("--train.stop_after_step=2", *HSDP)),  # 2 micro-batches per rank
            (2, ("--train.stop_after_step=4", "--train.parallel=fsdp", "--defer-first")),  # accumulation 4
            (1, ("--train.stop_after_step=6",)),  # accumulation 8
            (2, ("--train.parallel=hsdp",))]  # two "nodes" of 2 ranks: shard groups of the local world size, 2
    for i, (nproc, extra) in enumerate(hops):
        launch(nproc, "checkpoint_move_worker.py", str(tmp_path / f"hop{i}"), *HOP_ARGS, out, *extra,
               nnodes=2 if i == 3 else 1)
    dumps = [{kind: torch.load(tmp_path / f"hop{i}.{kind}.pt", weights_only=False) for kind in ("loaded", "final")}
             for i in range(len(hops))]
    for i in range(1, len(hops)):  # what each layout loaded is bitwise what the previous one saved
        saved, loaded = dumps[i - 1]["final"], dumps[i]["loaded"]
        assert loaded["step"] == saved["step"] == 2 * i
        assert _same(loaded["model"], saved["model"]), f"hop {i}: model state differs"
        assert _same(loaded["optimizer"], saved["optimizer"]), f"hop {i}: optimizer state differs"
    assert dumps[-1]["final"]["step"] == 8

    ckpt = tmp_path / "run" / "checkpoints"
    size = {step: sum(f.stat().st_size for f in (ckpt / f"step_{step:07d}.dcp").iterdir()) for step in (4, 8)}
    assert 0.9 < size[8] / size[4] < 1.1  # hsdp(2 x 2) writes each shard once, as fsdp(2) does
    assert sorted(p.name for p in (ckpt / "step_0000008.dcp").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]

    records = [json.loads((tmp_path / f"hop{i}.json").read_text()) for i in range(len(hops))]
    assert [r["step"] for rs in records for r in rs] == list(range(1, 9))
    from model import GPT
    from configs.schema import load_config
    model = GPT(load_config(list(HOP_ARGS)).model)
    whole = sum(p.numel() * 4 for p in model.parameters())
    half = sum(-(-p.shape[0] // 2) * p[0].numel() * 4 for p in model.parameters())  # FSDP2 pads rows to 2 ranks
    one = records[2][0]["grad_bytes_per_rank"]
    assert one == whole
    deferred, default = records[1][0]["grad_bytes_per_rank"], records[1][1]["grad_bytes_per_rank"]
    assert default == half and default <= 0.55 * one
    assert deferred == whole  # train.fsdp_defer_grad_sync: the whole unsharded gradient between micro-batches
    assert records[0][0]["grad_bytes_per_rank"] == half  # hsdp: a shard group of 2
