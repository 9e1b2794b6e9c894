"""Who orthogonalizes which matrix: the Newton-Schulz work plan of a set of matrices over a group of ranks.

A pure function of the matrix shapes and the group size (no process group, no tensors), so every rank computes the
same plan without communicating, tests check its balance directly, and callers cache it: a plan is built once per
(shapes, group size) and reused every step (:func:`plan_newton_schulz` is memoized).

Cost model, in multiply-adds per Newton-Schulz iteration of one m x n matrix in its wide orientation (m <= n):

- whole, on one rank: ``A = X X^T`` (m^2 n), ``A @ A`` (m^3), ``B @ X`` (m^2 n): ``2 m^2 n + m^3``;
- split over a *team* of k ranks by columns of the wide orientation (rank j holds X_j, n_j columns): each member
  computes ``A_j = X_j X_j^T``, all-reduces A over the team, then ``X_j <- a X_j + b A X_j + c A (A X_j)``, i.e.
  ``3 m^2 n_j`` each (no m^3 term: A A is never formed) plus one m x m all-reduce per iteration.

The ideal load is the whole-matrix total divided by the ranks; the plan is greedy longest-processing-time (the most
expensive item first, onto the least loaded rank; a team onto the k least loaded ranks), deterministic. A matrix is
split only when the whole-matrix plan leaves the busiest rank above ``accept`` x the ideal (few large matrices on
many ranks, e.g. GPT-2 124M's 72 matrices on 512 ranks); then the plan with the lowest busiest load over a range of
per-item caps is kept: the one with the fewest team slots among those within ``accept`` x the ideal, else the least
busiest. The model counts flops only: a team's m x m all-reduce per
iteration is not weighed against them.

The exchange plan of a bucket (the matrices of one wide shape, in first-appearance order: an MLP's up and down
matrices, 4d x d and d x 4d, share one, so a bucket has enough matrices to go round the ranks) lists what each
rank produces:
its whole matrices, then its column blocks of team matrices, flattened in that order into one buffer; buffers are
padded to the bucket's longest so one all-gather per bucket exchanges every result (optim/ns_exchange.py).
"""
from __future__ import annotations

import functools
import heapq
import math
from dataclasses import dataclass

ACCEPT = 1.25  # a whole-matrix plan within this factor of the ideal load is kept (no team splits)
# per-item caps tried (x the ideal load): a matrix costing more than the cap is split into the fewest columns blocks
# under it; caps below 1 give finer blocks that pack more evenly when large matrices outnumber ranks per matrix
CAPS = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.75, 2.0)


def wide(shape: tuple[int, ...]) -> tuple[int, int]:
    """(m, n) with m <= n: the orientation Newton-Schulz iterates in (a tall matrix is transposed)."""
    a, b = shape[-2], shape[-1]
    return (a, b) if a <= b else (b, a)


def whole_cost(shape: tuple[int, ...]) -> int:
    """Multiply-adds of one Newton-Schulz iteration on the whole matrix: 2 m^2 n + m^3 (m <= n)."""
    m, n = wide(shape)
    return 2 * m * m * n + m ** 3


def team_cost(shape: tuple[int, ...], cols: int) -> int:
    """Multiply-adds of one iteration for a team member holding ``cols`` columns of the wide orientation: 3 m^2 cols."""
    m, _ = wide(shape)
    return 3 * m * m * cols


def even_split(n: int, k: int) -> tuple[int, ...]:
    """n split into k parts differing by at most one (the larger first)."""
    return tuple(n // k + (1 if j < n % k else 0) for j in range(k))


@dataclass(frozen=True)
class Block:
    """One rank's output for one matrix: columns [lo, hi) of its wide orientation (whole: lo=0, hi=n, team of 1)."""
    matrix: int
    lo: int
    hi: int
    team: tuple[int, ...]

    @property
    def whole(self) -> bool:
        return len(self.team) == 1


@dataclass(frozen=True)
class Bucket:
    """The matrices of one wide shape (m x n and n x m together) and what each rank contributes to the bucket's
    exchange buffer."""
    shape: tuple[int, int]  # (m, n), m <= n
    matrices: tuple[int, ...]
    blocks: tuple[tuple[Block, ...], ...]  # per rank: whole matrices (index order), then team blocks (index order)

    def numel(self, rank: int) -> int:
        m, _ = wide(self.shape)
        return sum(m * (b.hi - b.lo) for b in self.blocks[rank])

    @property
    def padded(self) -> int:
        """Elements of each rank's slot in the bucket's all-gather (the longest contribution)."""
        return max(self.numel(r) for r in range(len(self.blocks)))


@dataclass(frozen=True)
class NSPlan:
    shapes: tuple[tuple[int, int], ...]
    world: int
    teams: tuple[tuple[int, ...], ...]  # per matrix, the ranks computing it (one rank: whole)
    loads: tuple[int, ...]  # per rank, multiply-adds per iteration
    buckets: tuple[Bucket, ...]

    @property
    def ideal(self) -> float:
        return sum(whole_cost(s) for s in self.shapes) / self.world

    @property
    def imbalance(self) -> float:
        """Busiest rank's load over the ideal (total whole-matrix work / ranks)."""
        return max(self.loads) / self.ideal if self.shapes else 1.0

    def owner(self, i: int) -> int:
        """The rank that computes matrix i whole (refused for a team matrix)."""
        if len(self.teams[i]) != 1:
            raise ValueError(f"matrix {i} of shape {self.shapes[i]} is split over ranks {self.teams[i]}")
        return self.teams[i][0]


def _lpt(shapes, ks: list[int], world: int):
    """Greedy LPT of items (matrix i split over ks[i] ranks): teams and per-rank loads. Among ranks, the one holding
    the fewest items of the item's shape bucket so far wins first, then the least loaded: a bucket's items spread
    evenly (its all-gather pads every rank to the longest contribution), and equal-cost items still go to the least
    loaded ranks."""
    cost = [whole_cost(s) if k == 1 else team_cost(s, even_split(wide(s)[1], k)[0]) for s, k in zip(shapes, ks)]
    loads = [0] * world
    heaps: dict[tuple, list] = {}  # per bucket: (items of the bucket held, load, rank), refreshed lazily
    teams: list[tuple[int, ...]] = [()] * len(shapes)
    for i in sorted(range(len(shapes)), key=lambda i: (-cost[i], i)):
        heap = heaps.setdefault((wide(shapes[i]), ks[i]), [(0, 0, r) for r in range(world)])
        picked = []
        while len(picked) < ks[i]:  # loads only grow: an entry with a stale load is re-pushed, not taken
            held, load, r = heapq.heappop(heap)
            if load != loads[r]:
                heapq.heappush(heap, (held, loads[r], r))
            else:
                picked.append((held, r))
        picked.sort(key=lambda x: x[1])
        teams[i] = tuple(r for _, r in picked)
        for (held, r), cols in zip(picked, even_split(wide(shapes[i])[1], ks[i])):
            loads[r] += cost[i] if ks[i] == 1 else team_cost(shapes[i], cols)
            heapq.heappush(heap, (held + 1, loads[r], r))
    return teams, loads


def _buckets(shapes, teams, world: int) -> tuple[Bucket, ...]:
    order: dict[tuple, list[int]] = {}
    for i, s in enumerate(shapes):
        order.setdefault(wide(s), []).append(i)
    out = []
    for shape, idx in order.items():
        whole: list[list[Block]] = [[] for _ in range(world)]
        split: list[list[Block]] = [[] for _ in range(world)]
        n = wide(shape)[1]
        for i in idx:
            team = teams[i]
            lo = 0
            for r, cols in zip(team, even_split(n, len(team))):
                (whole if len(team) == 1 else split)[r].append(Block(i, lo, lo + cols, team))
                lo += cols
        out.append(Bucket(shape, tuple(idx), tuple(tuple(w + s) for w, s in zip(whole, split))))
    return tuple(out)


@functools.lru_cache(maxsize=64)
def plan_newton_schulz(shapes: tuple[tuple[int, int], ...], world: int, *, split: bool = True,
                       accept: float = ACCEPT) -> NSPlan:
    """The Newton-Schulz plan of matrices of ``shapes`` (in order) over ``world`` ranks (a process group's size, or
    an HSDP shard group's). ``split=False``: whole matrices only (for callers that cannot run a team)."""
    shapes = tuple((int(s[-2]), int(s[-1])) for s in shapes)
    if world < 1:
        raise ValueError(f"plan_newton_schulz: world must be >= 1, got {world}")
    best = _lpt(shapes, [1] * len(shapes), world)
    if split and world > 1 and shapes:
        ideal = sum(whole_cost(s) for s in shapes) / world
        if max(best[1]) > accept * ideal:
            cands = []
            for f in CAPS:
                cap = f * ideal
                ks = []
                for s in shapes:
                    m, n = wide(s)
                    k = 1 if whole_cost(s) <= cap else math.ceil(3 * m * m * n / cap)
                    ks.append(max(1, min(k, n, world)))
                cands.append((_lpt(shapes, ks, world), sum(ks)))
            good = [c for c in cands if max(c[0][1]) <= accept * ideal]
            best = min(good, key=lambda c: c[1])[0] if good else min(cands, key=lambda c: (max(c[0][1]), c[1]))[0]
    teams, loads = best
    return NSPlan(shapes, world, tuple(teams), tuple(loads), _buckets(shapes, teams, world))


def plan_owners(costs: tuple[int, ...], world: int) -> tuple[int, ...]:
    """An owner rank per indivisible item of the given costs: greedy LPT, deterministic (ties to the lower index
    and rank). Memoized: the sharded LMOs' owners are computed once per parameter set and group size."""
    return _plan_owners(tuple(int(c) for c in costs), int(world))


@functools.lru_cache(maxsize=64)
def _plan_owners(costs: tuple[int, ...], world: int) -> tuple[int, ...]:
    heap = [(0, r) for r in range(world)]
    owners = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, r = heapq.heappop(heap)
        owners[i] = r
        heapq.heappush(heap, (load + costs[i], r))
    return tuple(owners)
