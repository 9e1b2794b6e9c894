"""Newton-Schulz split across ranks equals the single-process computation (torchrun --nproc_per_node=2, gloo).

Run as a script by torchrun (the worker below); pytest launches it through `python -m torch.distributed.run`.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_split_orthogonalization_equals_single_process(tmp_path):
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", __file__, str(out)]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2
    assert result["ns_max_diff"] <= 1e-6, result
    assert result["scion_max_diff"] <= 1e-6, result
    assert result["muon_max_diff"] <= 1e-6, result
    assert result["ranks_agree"], result
    assert result["ns_bytes"] == result["ns_bytes_formula"], result
    assert result["ns_bytes"] <= 0.6 * result["ns_bytes_old"], result
    assert result["team_size"] == 2 and result["team_max_diff"] <= 1e-5, result
    # reference rho scaling: the public code's G summed over 2 ranks, i.e. min(1, 2G/rho)
    assert result["reference_clip"] == pytest.approx(min(1.0, 2 * result["dual_norm"] / result["rho"]), rel=1e-6)
    assert result["free_clip"] == pytest.approx(min(1.0, result["free_dual_norm"] / result["rho"]), rel=1e-6)
    assert result["free_clip"] < 1.0


def _worker(out_path: str) -> None:
    import torch
    import torch.distributed as dist

    sys.path.insert(0, str(REPO_ROOT))
    from optim import ClippedScion, Muon, orthogonalize
    from optim.ns_plan import plan_newton_schulz

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # every rank holds the same (DDP-averaged) gradients
    shapes = [(16, 8), (8, 24), (16, 8), (8, 8), (16, 8), (8, 24), (12, 12)]
    mats = [torch.randn(s) for s in shapes]
    split = orthogonalize(mats, dtype=torch.float32, split_across_ranks=True)
    whole = orthogonalize(mats, dtype=torch.float32, split_across_ranks=False)
    ns_diff = max((a - b).abs().max().item() for a, b in zip(split, whole))

    # bytes this rank receives in the exchange (one all-gather per shape bucket), counted at the collective
    received = []
    real_all_gather = dist.all_gather_into_tensor

    def counting_all_gather(output, input, *args, **kwargs):
        received.append((world - 1) * input.numel() * input.element_size())
        return real_all_gather(output, input, *args, **kwargs)

    dist.all_gather_into_tensor = counting_all_gather
    try:
        orthogonalize(mats, dtype=torch.bfloat16, split_across_ranks=True)
    finally:
        dist.all_gather_into_tensor = real_all_gather
    plan = plan_newton_schulz(tuple(shapes), world)
    formula = sum((world - 1) * 2 * b.padded for b in plan.buckets)  # bf16: 2 bytes per entry
    # a matrix split over a team of ranks (no other matrix to balance it) equals the whole computation too
    team = torch.randn(24, 40)
    (team_split,) = orthogonalize([team], dtype=torch.float32, split_across_ranks=True)
    (team_whole,) = orthogonalize([team], dtype=torch.float32, split_across_ranks=False)
    team_diff = (team_split - team_whole).abs().max().item()
    team_size = len(plan_newton_schulz(((24, 40),), world).teams[0])
    old = 0  # the previous scheme: each shape bucket zero-padded to a multiple of W, fp32 all_gather
    for shape in set(shapes):
        n = shapes.count(shape)
        old += (world - 1) * -(-n // world) * shape[0] * shape[1] * 4

    def run_scion(split_flag, rho_scaling="world_size_free", rho=50.0):
        torch.manual_seed(1)
        params = [torch.nn.Parameter(0.1 * torch.randn(s)) for s in shapes]
        opt = ClippedScion([{"params": params, "norm": "spectral", "radius": 3.0}], lr=0.05, rho=rho,
                           ns_dtype="float32", split_across_ranks=split_flag, rho_scaling=rho_scaling)
        for step in range(3):
            torch.manual_seed(100 + step)
            for p in params:
                p.grad = torch.randn(p.shape)
            opt.step()
        return params, opt

    a, _ = run_scion(True)
    b, _ = run_scion(False)
    scion_diff = max((x - y).abs().max().item() for x, y in zip(a, b))

    def run_muon(split_flag):
        torch.manual_seed(2)
        params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
        opt = Muon(params, lr=0.02, ns_dtype="float32", split_across_ranks=split_flag)
        for step in range(2):
            torch.manual_seed(200 + step)
            for p in params:
                p.grad = torch.randn(p.shape)
            opt.step()
        return params

    muon_diff = max((x - y).abs().max().item() for x, y in zip(run_muon(True), run_muon(False)))
    flat = torch.cat([p.detach().reshape(-1) for p in a])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    agree = all(torch.equal(gathered[0], g) for g in gathered)

    rho = 1e4
    _, ref_opt = run_scion(True, "reference", rho)
    _, free_opt = run_scion(True, "world_size_free", rho)
    if rank == 0:
        Path(out_path).write_text(json.dumps(dict(
            world_size=world, ns_max_diff=ns_diff, ns_bytes=sum(received), ns_bytes_formula=formula,
            ns_bytes_old=old, team_max_diff=team_diff, team_size=team_size, scion_max_diff=scion_diff, muon_max_diff=muon_diff,
            ranks_agree=agree, rho=rho, dual_norm=ref_opt.stats()["dual_norm"].item(),
            reference_clip=ref_opt.stats()["clip_factor"].item(),
            free_clip=free_opt.stats()["clip_factor"].item(), free_dual_norm=free_opt.stats()["dual_norm"].item())))
        print(json.dumps({k: v for k, v in json.loads(Path(out_path).read_text()).items()}))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    _worker(sys.argv[1])
