"""trainer/scale.py on its own (no process group): the hsdp formula's structure, locality, memory, and the tables'
command. The ddp/fsdp byte counts are checked against real gloo steps in tests/distributed/test_comm_accounting.py."""
from __future__ import annotations

import pytest

from trainer.scale import bytes_by_locality, build_meta, main, memory_bytes, step_bytes

SMALL = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=96, block_size=8)


@pytest.fixture(scope="module")
def model():
    return build_meta(**SMALL)


def test_hsdp_is_fsdp_within_a_group_plus_one_all_reduce_across(model):
    n = sum(p.numel() for p in model.parameters())
    kw = dict(optimizer="muon", accum=4, param_bytes=4)
    fsdp4 = step_bytes(model, 4, mode="fsdp", **kw)
    hsdp = step_bytes(model, 16, mode="hsdp", shard_degree=4, **kw)
    across = hsdp.pop("all_reduce (gradients across replicas)")
    assert hsdp == fsdp4  # the shard group of 4 does what fsdp over 4 ranks does
    assert across == pytest.approx(2 * 3 / 4 * n / 4 * 4, rel=0.05)  # 1/4 of the gradient, ring over 4 replicas
    assert step_bytes(model, 16, mode="hsdp", shard_degree=16, **kw) == step_bytes(model, 16, mode="fsdp", **kw)
    with pytest.raises(ValueError, match="shard_degree"):
        step_bytes(model, 16, mode="hsdp", shard_degree=3, **kw)


def test_accumulation_modes(model):
    one = step_bytes(model, 4, mode="fsdp", optimizer="adamw")
    each = step_bytes(model, 4, mode="fsdp", optimizer="adamw", accum=4)
    deferred = step_bytes(model, 4, mode="fsdp", optimizer="adamw", accum=4, defer_grad_sync=True)
    assert each["reduce_scatter (gradients)"] == 4 * one["reduce_scatter (gradients)"]
    assert deferred["reduce_scatter (gradients)"] == one["reduce_scatter (gradients)"]
    n = sum(p.numel() for p in model.parameters())
    held = memory_bytes(model, 4, mode="fsdp", optimizer="adamw", accum=4, defer_grad_sync=True)
    sharded = memory_bytes(model, 4, mode="fsdp", optimizer="adamw", accum=4)
    block = max(sum(p.numel() for p in b.parameters()) for b in model.blocks)
    assert held - sharded == 4 * n - 4 * block  # deferred: the whole fp32 gradient, not one block's in flight


def test_locality_by_process_group(model):
    kw = dict(optimizer="muon", accum=2)
    hsdp = bytes_by_locality(model, 16, gpus_per_node=4, mode="hsdp", shard_degree=4, **kw)
    total = sum(step_bytes(model, 16, mode="hsdp", shard_degree=4, **kw).values())
    assert hsdp["across-node"] == step_bytes(model, 16, mode="hsdp", shard_degree=4, **kw)[
        "all_reduce (gradients across replicas)"]
    assert hsdp["within-node"] + hsdp["across-node"] == total
    fsdp = bytes_by_locality(model, 16, gpus_per_node=4, mode="fsdp", **kw)
    assert fsdp["within-node"] == 0 and fsdp["across-node"] > hsdp["across-node"]
    one_node = bytes_by_locality(model, 4, gpus_per_node=4, mode="ddp", **kw)
    assert one_node["across-node"] == 0 and one_node["within-node"] > 0


def test_tables_command(capsys):
    main(["--gpus", "8,16", "--gpus-per-node", "8", "--accum", "2", "--optimizers", "adamw"])
    out = capsys.readouterr().out
    assert "| 124M | 0.12B | 8 | adamw |" in out and "| 7B | 16 | adamw |" in out and "=fsdp" in out
