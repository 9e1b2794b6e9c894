"""Chunk tables: 64-bit addressing, grouping by dtype, alignment, caching (pure host logic, no kernels run)."""
from __future__ import annotations

import pytest
import torch

import optim.kernel_api  # noqa: F401  loads kernels/ as clipgpt_kernels
from clipgpt_kernels.chunk_table import (ALIGNMENT_BYTES, build_table, chunk_rows, chunk_table, override_tuning,
                                 plan_chunks, tuning)

BIG = 2**31 + 2**20 + 5  # more elements than an int32 offset can address


def test_plan_covers_every_element_once_for_tensors_over_2_pow_31():
    plan = plan_chunks([5, 0, BIG, 3], chunk_size=2**20)
    assert [c for c in plan if c[0] == 1] == []  # zero-size tensor: no chunk
    for index, numel in ((0, 5), (2, BIG), (3, 3)):
        chunks = [(start, count) for i, start, count in plan if i == index]
        assert sum(count for _, count in chunks) == numel
        assert all(0 < count <= 2**20 for _, count in chunks)
        assert all(a[0] + a[1] == b[0] for a, b in zip(chunks, chunks[1:]))  # contiguous, in order
    assert plan[-2] == (2, BIG - 5, 5)


def test_rows_hold_64_bit_byte_addresses():
    base_p, base_g = 2**40, 2**41 + 4096  # addresses far above 2**32, as on a GPU
    plan = plan_chunks([BIG], chunk_size=2**20)
    rows = chunk_rows([[base_p], [base_g]], [[2], [4]], plan)  # bf16 params, fp32 grads
    last = rows[-1]
    assert last == [base_p + (BIG - 5) * 2, base_g + (BIG - 5) * 4, 5, 0]
    assert max(row[0] for row in rows) > 2**32
    assert torch.tensor(rows[-3:], dtype=torch.int64)[-1, 1].item() == base_g + (BIG - 5) * 4  # fits int64


def test_groups_by_dtype_signature_and_offsets_partials():
    ts = [torch.zeros(100), torch.zeros(10, dtype=torch.bfloat16), torch.zeros(0), torch.zeros(70)]
    table = build_table([ts], chunk_size=64)
    assert [g.dtypes for g in table.groups] == [(torch.float32,), (torch.bfloat16,)]
    assert [g.num_rows for g in table.groups] == [2 + 2, 1]
    assert [g.first_row for g in table.groups] == [0, 4] and table.num_rows == 5
    assert table.groups[0].rows[:, 2].tolist() == [0, 0, 3, 3]  # tensor index column
    assert table.groups[0].rows[:, 1].tolist() == [64, 36, 64, 6]  # count column


def test_alignment_flag_follows_the_addresses():
    base = torch.zeros(256)
    assert base.data_ptr() % ALIGNMENT_BYTES == 0
    assert build_table([[base[:100], base[64:]]], chunk_size=64).groups[0].aligned
    # a view 4 bytes in: its 3-element head is peeled into an unaligned chunk, the rest keeps vector access
    peeled = build_table([[base[1:]]], chunk_size=64)
    assert [(g.aligned, g.rows[:, 1].tolist()) for g in peeled.groups] == [(True, [64, 64, 64, 60]), (False, [3])]
    assert peeled.groups[0].rows[0, 0] % ALIGNMENT_BYTES == 0
    mixed = build_table([[base[:100], base[1:50], base[128:]]], chunk_size=64)
    assert [(g.aligned, g.rows[:, 2].tolist()) for g in mixed.groups] == [(True, [0, 0, 1, 2, 2]), (False, [1])]
    # lists misaligned by different amounts have no common head: the whole tensor runs unaligned
    apart = build_table([[base[1:50]], [base[2:51]]], chunk_size=64)
    assert [(g.aligned, g.rows[:, 2].tolist()) for g in apart.groups] == [(False, [49])]


def test_table_is_cached_per_list_and_rebuilt_when_a_tensor_moves():
    ts = [torch.zeros(10), torch.zeros(20)]
    with override_tuning(chunk_size=16):
        first = chunk_table([ts])
        assert chunk_table([list(ts)]) is first
        ts[1] = torch.zeros(20)
        assert chunk_table([ts]) is not first
    assert tuning().chunk_size != 16


def test_override_tuning_rejects_bad_sizes():
    with pytest.raises(ValueError, match="chunk_size must be a power of two"):
        with override_tuning(chunk_size=100):
            pass
