"""The LMOs of optim/lmo.py on sharded (FSDP2 DTensor) tensors, with the same math as on whole tensors.

- ``sign`` is elementwise: each rank computes it on its own rows (its scaling reads the global shape, and the
  pieces of a split tensor share it).
- Every other norm (spectral, colnorm, rownorm, bias_rms) needs the whole tensor: each tensor gets an owner rank
  (balanced by cost), one all-to-all brings the shards to the owners, each owner splits its whole tensors into their
  pieces (`split_sizes`, e.g. q, k, v of a fused qkv) and runs `lmo_many` on them (Newton-Schulz batched by shape),
  and a second all-to-all returns each rank its rows of the result. Spectral inputs travel in the Newton-Schulz dtype
  (Newton-Schulz casts to it first, so nothing changes); results travel in the tensor's dtype.
"""
from __future__ import annotations

from typing import Callable

import torch

from . import sharding
from .lmo import LMOSpec, lmo_many
from .newton_schulz import orthogonalize
from .splits import split_pieces


def sign_lmo_local(d_local: torch.Tensor, spec: LMOSpec, shape: tuple[int, ...]) -> torch.Tensor:
    """-sign(d)/c on a shard of a tensor of global ``shape`` (c = math d_in if normalized, else 1)."""
    d_in = shape[0] if spec.transpose else shape[1]
    return torch.sign(d_local) * (-1.0 / (d_in if spec.is_normalized else 1))


def _piecewise_at_owners(layouts: list[sharding.RowShards], shards: list[torch.Tensor], splits: list,
                         transport: list[torch.dtype], compute: Callable[[list[torch.Tensor], list[int]], list]
                         ) -> list[torch.Tensor]:
    """Run ``compute`` on whole tensors at their owner ranks and return each rank its rows of the results.

    Tensor i (this rank's rows ``shards[i]``, layout ``layouts[i]``) travels to its owner in ``transport[i]`` (one
    all-to-all per transport dtype), is cut into its pieces (``splits[i]``, sizes along dim 0, or whole), and
    ``compute(pieces, tensor_index_of_each_piece)`` returns one result per piece; the results are joined and the rows
    go back in the shards' dtypes (one all-to-all per dtype).
    """
    owners = sharding.assign_owners([lay.shape for lay in layouts], layouts[0].world)
    wholes = {}
    for dtype in sorted(set(transport), key=str):
        idx = [i for i, d in enumerate(transport) if d == dtype]
        got = sharding.gather_to_owners([shards[i] for i in idx], [layouts[i] for i in idx],
                                        [owners[i] for i in idx], dtype=dtype)
        wholes.update({idx[j]: w.to(shards[idx[j]].dtype) for j, w in got.items()})
    pieces, piece_of, spans = [], [], {}
    for i in sorted(wholes):
        parts = split_pieces(wholes[i], splits[i])
        spans[i] = (len(pieces), len(parts))
        pieces += parts
        piece_of += [i] * len(parts)
    outputs = compute(pieces, piece_of) if pieces else []
    results = {i: torch.cat(outputs[a:a + n]) for i, (a, n) in spans.items()}
    out: list[torch.Tensor | None] = [None] * len(shards)
    for dtype in sorted({t.dtype for t in shards}, key=str):
        idx = [i for i, t in enumerate(shards) if t.dtype == dtype]
        back = sharding.scatter_from_owners({j: results[i] for j, i in enumerate(idx) if i in results},
                                            [layouts[i] for i in idx], [owners[i] for i in idx], dtype=dtype,
                                            device=shards[idx[0]].device)
        for j, i in enumerate(idx):
            out[i] = back[j]
    return out  # type: ignore[return-value]


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

    def lmos(pieces, piece_of):
        return lmo_many(pieces, [specs[whole[j]] for j in piece_of], ns_steps=ns_steps, ns_dtype=ns_dtype,
                        split_across_ranks=False, method=method)

    rows = _piecewise_at_owners([sharding.row_shards(ds[i]) for i in whole], [ds[i].to_local() for i in whole],
                                [splits[i] for i in whole], transport, lmos)
    for j, i in enumerate(whole):
        out[i] = rows[j]
    return out  # type: ignore[return-value]


def orthogonalize_sharded(tensors: list[torch.Tensor], shards: list[torch.Tensor], split_sizes: list | None = None,
                          *, steps: int = 5, dtype: torch.dtype = torch.bfloat16, method: str = "newton_schulz",
                          piece_scale: Callable[[torch.Size], float] | None = None) -> list[torch.Tensor]:
    """Orthogonalization of sharded matrices, each run whole (piece by piece) by its owner rank (Muon under FSDP).

    ``tensors`` are the DTensor parameters (their layouts), ``shards`` this rank's rows of the matrices to
    orthogonalize. Each piece's result is multiplied by ``piece_scale(piece.shape)`` on the owner. Returns this
    rank's rows in the shards' dtypes.
    """
    if not tensors:
        return []

    def orthogonalized(pieces, _):
        ortho = orthogonalize(pieces, steps=steps, dtype=dtype, split_across_ranks=False, method=method)
        return ortho if piece_scale is None else [o * piece_scale(o.shape) for o in ortho]

    transport = [dtype if method == "newton_schulz" else s.dtype for s in shards]
    return _piecewise_at_owners([sharding.row_shards(t) for t in tensors], shards,
                                split_sizes or [None] * len(tensors), transport, orthogonalized)
