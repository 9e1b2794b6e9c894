"""The LMOs of optim/lmo.py on sharded (FSDP2 DTensor) tensors, with the same math as on whole tensors.

- ``sign`` is elementwise: each rank computes it on its own rows (its scaling reads the global shape, and the
  pieces of a split tensor share it).
- Every other norm (spectral, colnorm, rownorm, bias_rms) needs the whole tensor: each tensor gets an owner rank
  (balanced by cost), one all-to-all brings the shards to the owners, each owner splits its whole tensors into their
  pieces (`split_sizes`, e.g. q, k, v of a fused qkv) and computes their LMOs (Newton-Schulz batched by shape),
  and a second all-to-all returns each rank its rows of the result. Spectral tensors travel both ways in the
  Newton-Schulz dtype (Newton-Schulz casts to it first and its output is exact there; the -s factor of the LMO is
  applied where the rows arrive, so nothing changes); other results travel in the tensor's dtype. The all-to-alls
  run per bucket and asynchronously, so one bucket's exchange overlaps the next one's compute.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.distributed as dist

from . import sharding
from .lmo import LMOSpec, lmo, spectral_scale
from .newton_schulz import orthogonalize
from .splits import row_splits, split_pieces


def sign_lmo_local(d_local: torch.Tensor, spec: LMOSpec, shape: tuple[int, ...]) -> torch.Tensor:
    """-sign(d)/c on a shard of a tensor of global ``shape`` (c = math d_in if normalized, else 1)."""
    d_in = shape[0] if spec.transpose else shape[1]
    return torch.sign(d_local) * (-1.0 / (d_in if spec.is_normalized else 1))


def _piece_rows(size: int, start: int, rows: int, splits) -> list[tuple[int, int, int]]:
    """(first, end, piece index) of the local rows [start, start + rows) of a tensor of ``size`` rows cut into pieces
    of ``splits`` rows (None: one piece), relative to the local rows."""
    out, at = [], 0
    for j, n in enumerate(splits or [size]):
        lo, hi = max(at, start), min(at + n, start + rows)
        if lo < hi:
            out.append((lo - start, hi - start, j))
        at += n
    return out


def _piecewise_at_owners(layouts: list[sharding.RowShards], shards: list[torch.Tensor], splits: list,
                         transport: list[torch.dtype], compute: Callable[[list[torch.Tensor], list[int]], list],
                         factors: list | None = None) -> list[torch.Tensor]:
    """Run ``compute`` on whole tensors at their owner ranks and return each rank its rows of the results.

    Tensor i (this rank's rows ``shards[i]``, layout ``layouts[i]``) travels to its owner in ``transport[i]``, is
    cut into its pieces (``splits[i]``, sizes along dim 0, or whole), and ``compute(pieces, tensor_index_of_each_piece)``
    returns one result per piece; the results are joined and each rank gets its rows back. ``factors[i]`` (a
    function of a piece's shape, or None): compute's results for tensor i are unscaled (Newton-Schulz outputs,
    exactly representable in ``transport[i]``), travel back in ``transport[i]`` and the receiving rank multiplies
    each piece's rows by its factor; without one they travel back in the shard's dtype.

    Pipelined by bucket (tensors of one shape and dtypes, first-appearance order): every bucket's all-to-all to the
    owners starts at once; then each bucket waits for its inputs, computes, and starts its all-to-all back, which
    runs while the next bucket computes. Owners come from the memoized planner (sharding.assign_owners).
    """
    factors = factors or [None] * len(shards)
    splits = [row_splits(entry, f"sharded tensor of shape {tuple(lay.shape)}") for entry, lay in zip(splits, layouts)]
    back = [transport[i] if factors[i] is not None else shards[i].dtype for i in range(len(shards))]
    owners = sharding.assign_owners([lay.shape for lay in layouts], layouts[0].world)
    buckets: dict[tuple, list[int]] = {}
    for i, lay in enumerate(layouts):
        buckets.setdefault((lay.shape, transport[i], back[i], shards[i].dtype), []).append(i)

    def sub(idx, items):
        return [items[i] for i in idx]

    inbound = [(idx, sharding.gather_to_owners(sub(idx, shards), sub(idx, layouts), sub(idx, owners),
                                               dtype=transport[idx[0]], async_op=True)) for idx in buckets.values()]
    outbound = []
    for idx, pending in inbound:
        wholes = {j: w.to(shards[idx[j]].dtype) for j, w in pending.wait().items()}
        pieces, piece_of, spans = [], [], {}
        for j in sorted(wholes):
            parts = split_pieces(wholes[j], splits[idx[j]])
            spans[j] = (len(pieces), len(parts))
            pieces += parts
            piece_of += [idx[j]] * len(parts)
        outputs = compute(pieces, piece_of) if pieces else []
        results = {j: torch.cat(outputs[a:a + n]) for j, (a, n) in spans.items()}
        outbound.append((idx, sharding.scatter_from_owners(results, sub(idx, layouts), sub(idx, owners),
                                                           dtype=back[idx[0]], device=shards[idx[0]].device,
                                                           async_op=True)))
    out: list[torch.Tensor | None] = [None] * len(shards)
    for idx, pending in outbound:
        for j, rows in enumerate(pending.wait()):
            i = idx[j]
            rows = rows.to(shards[i].dtype)
            if factors[i] is not None:
                lay = layouts[i]
                start, mine = lay.starts[shard_rank(lay)], lay.sizes[shard_rank(lay)]
                sizes = splits[i] or [lay.shape[0]]
                for lo, hi, piece in _piece_rows(lay.shape[0], start, mine, splits[i]):
                    rows[lo:hi].mul_(factors[i]((sizes[piece], *lay.shape[1:])))
            out[i] = rows
    return out  # type: ignore[return-value]


def shard_rank(layout: sharding.RowShards) -> int:
    """This rank's position in the tensor's shard group."""
    return dist.get_rank(layout.group)


def _spectral_factor(shape: tuple[int, ...], spec: LMOSpec) -> float:
    return -spectral_scale(shape, spec)


def lmo_many_sharded(ds: list[torch.Tensor], specs: list[LMOSpec], split_sizes: list | None = None, *,
                     ns_steps: int = 5, ns_dtype: torch.dtype = torch.bfloat16,
                     method: str = "newton_schulz") -> list[torch.Tensor]:
    """lmo of every sharded tensor of ``ds`` (each piece of a split tensor its own layer), as this rank's rows."""
    sharding.shard_group(ds)  # all sharded, one layout family
    splits = split_sizes or [None] * len(ds)
    out: list[torch.Tensor | None] = [None] * len(ds)
    whole = [i for i, spec in enumerate(specs) if spec.norm != "sign"]
    for i, (d, spec) in enumerate(zip(ds, specs)):
        if spec.norm == "sign":
            if d.ndim != 2:
                raise ValueError(f"norm 'sign' needs a 2-D tensor, got shape {tuple(d.shape)}")
            out[i] = sign_lmo_local(d.to_local(), spec, tuple(d.shape))
    if not whole:
        return out  # type: ignore[return-value]
    transport = [ns_dtype if specs[i].norm == "spectral" and method == "newton_schulz" else ds[i].dtype
                 for i in whole]
    factors = [functools.partial(_spectral_factor, spec=specs[i]) if specs[i].norm == "spectral" else None
               for i in whole]

    def lmos(pieces, piece_of):  # spectral pieces: the orthogonalized matrix, scaled where its rows arrive
        kinds = [specs[whole[j]] for j in piece_of]
        spectral = [k for k, spec in enumerate(kinds) if spec.norm == "spectral"]
        ortho = dict(zip(spectral, orthogonalize([pieces[k] for k in spectral], steps=ns_steps, dtype=ns_dtype,
                                                 split_across_ranks=False, method=method)))
        return [ortho[k] if k in ortho else lmo(p, spec) for k, (p, spec) in enumerate(zip(pieces, kinds))]

    rows = _piecewise_at_owners([sharding.row_shards(ds[i]) for i in whole], [ds[i].to_local() for i in whole],
                                [splits[i] for i in whole], transport, lmos, factors)
    for j, i in enumerate(whole):
        out[i] = rows[j]
    return out  # type: ignore[return-value]


def orthogonalize_sharded(tensors: list[torch.Tensor], shards: list[torch.Tensor], split_sizes: list | None = None,
                          *, steps: int = 5, dtype: torch.dtype = torch.bfloat16, method: str = "newton_schulz",
                          piece_scale: Callable[[torch.Size], float] | None = None) -> list[torch.Tensor]:
    """Orthogonalization of sharded matrices, each run whole (piece by piece) by its owner rank (Muon under FSDP).

    ``tensors`` are the DTensor parameters (their layouts), ``shards`` this rank's rows of the matrices to
    orthogonalize. Each piece's result is multiplied by ``piece_scale(piece.shape)`` where its rows arrive (the
    results travel in the Newton-Schulz dtype). Returns this rank's rows in the shards' dtypes.
    """
    if not tensors:
        return []

    def orthogonalized(pieces, _):
        return orthogonalize(pieces, steps=steps, dtype=dtype, split_across_ranks=False, method=method)

    transport = [dtype if method == "newton_schulz" else s.dtype for s in shards]
    return _piecewise_at_owners([sharding.row_shards(t) for t in tensors], shards,
                                split_sizes or [None] * len(tensors), transport, orthogonalized,
                                [piece_scale] * len(tensors) if piece_scale is not None else None)
