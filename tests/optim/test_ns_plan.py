"""optim.ns_plan: the Newton-Schulz work plan alone (no process group): balance, coverage, caching."""
from __future__ import annotations

import pytest

from optim.ns_plan import plan_newton_schulz, plan_owners, team_cost, whole_cost, wide


def gpt_pieces(n_layer: int, d: int) -> tuple[tuple[int, int], ...]:
    """The orthogonalized matrices of a GPT-2 style model in step order: q, k, v (pieces of the fused qkv), the
    attention projection, the MLP's up (4d x d) and down (d x 4d) matrices, per block."""
    return tuple(s for _ in range(n_layer) for s in [(d, d)] * 4 + [(4 * d, d), (d, 4 * d)])


SHAPES = {"124M": gpt_pieces(12, 768), "7B": gpt_pieces(32, 4096)}


@pytest.mark.parametrize("model", sorted(SHAPES))
@pytest.mark.parametrize("world", [8, 64, 512])
def test_busiest_rank_within_1_5x_of_ideal(model, world):
    plan = plan_newton_schulz(SHAPES[model], world)
    assert plan.imbalance <= 1.5, (model, world, plan.imbalance)
    total = sum(whole_cost(s) for s in SHAPES[model])
    assert plan.ideal == pytest.approx(total / world)
    whole = plan_newton_schulz(SHAPES[model], world, split=False)
    assert all(len(t) == 1 for t in whole.teams)
    if model == "124M" and world == 512:  # 72 matrices cannot keep 512 ranks busy whole: the 14x case
        assert whole.imbalance > 10


@pytest.mark.parametrize("world", [1, 2, 8, 64, 512])
def test_blocks_cover_every_matrix_once_and_loads_add_up(world):
    shapes = SHAPES["124M"]
    plan = plan_newton_schulz(shapes, world)
    covered = {i: [] for i in range(len(shapes))}
    loads = [0] * world
    for bucket in plan.buckets:
        assert all(wide(shapes[i]) == bucket.shape for i in bucket.matrices)
        for rank, blocks in enumerate(bucket.blocks):
            for b in blocks:
                assert rank in b.team and b.team == plan.teams[b.matrix]
                covered[b.matrix].append((b.lo, b.hi))
                loads[rank] += whole_cost(shapes[b.matrix]) if b.whole else team_cost(shapes[b.matrix], b.hi - b.lo)
            kinds = [b.whole for b in blocks]
            assert kinds == sorted(kinds, reverse=True)  # whole matrices first, then team blocks
        assert bucket.padded == max(bucket.numel(r) for r in range(world))
    for i, spans in covered.items():
        spans.sort()
        assert spans[0][0] == 0 and spans[-1][1] == wide(shapes[i])[1]
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(spans, spans[1:]))
        assert len(spans) == len(plan.teams[i]) == len(set(plan.teams[i]))
    assert tuple(loads) == plan.loads
    # one bucket per wide shape in first-appearance order: the MLP's 4d x d and d x 4d matrices share one
    assert [b.matrices[0] for b in plan.buckets] == [0, 4] and len(plan.buckets[1].matrices) == 24


def test_balanced_small_worlds_keep_whole_matrices():
    # the tiny test models at 2 and 4 ranks: whole matrices balance, so no team (and bitwise one-process results)
    tiny = gpt_pieces(2, 24)
    for world in (1, 2, 4):
        plan = plan_newton_schulz(tiny, world)
        assert all(len(t) == 1 for t in plan.teams) and plan.imbalance <= 1.25
    assert plan_newton_schulz(tiny, 1).teams == ((0,),) * len(tiny)


def test_a_single_matrix_is_split_across_a_team():
    plan = plan_newton_schulz(((64, 48),), 2)
    assert plan.teams == ((0, 1),)
    (bucket,) = plan.buckets
    assert [(b.lo, b.hi) for bs in bucket.blocks for b in bs] == [(0, 32), (32, 64)]  # columns of the wide (48 x 64)
    with pytest.raises(ValueError, match="split over ranks"):
        plan.owner(0)


def test_plans_are_cached_and_deterministic():
    a = plan_newton_schulz(SHAPES["7B"], 512)
    assert plan_newton_schulz(SHAPES["7B"], 512) is a  # built once per (shapes, group size)
    plan_newton_schulz.cache_clear()
    b = plan_newton_schulz(SHAPES["7B"], 512)
    assert b is not a and b == a
    assert plan_owners((5, 3, 3, 1), 2) == (0, 1, 1, 0)
    with pytest.raises(ValueError, match="world"):
        plan_newton_schulz(SHAPES["7B"], 0)
