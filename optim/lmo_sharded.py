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


def _to_owners(tensors: list[torch.Tensor], transport: list[torch.dtype]):
    """(layouts, owners, {index: whole tensor in its own dtype} of the tensors this rank owns): one all-to-all per
    transport dtype."""
    layouts = [sharding.row_shards(t) for t in tensors]
    owners = sharding.assign_owners([lay.shape for lay in layouts], layouts[0].world) if layouts else []
    wholes = {}
    for dtype in sorted(set(transport), key=str):
        idx = [i for i, d in enumerate(transport) if d == dtype]
        got = sharding.gather_to_owners([tensors[i].to_local() for i in idx], [layouts[i] for i in idx],
                                        [owners[i] for i in idx], dtype=dtype)
        wholes.update({idx[j]: w.to(tensors[idx[j]].dtype) for j, w in got.items()})
    return layouts, owners, wholes


def _to_shards(results: dict[int, torch.Tensor], tensors: list[torch.Tensor], layouts, owners,
               transport: list[torch.dtype]) -> list[torch.Tensor]:
    """This rank's rows of every result (owners send them back), one all-to-all per transport dtype."""
    out: list[torch.Tensor | None] = [None] * len(tensors)
    for dtype in sorted(set(transport), key=str):
        idx = [i for i, d in enumerate(transport) if d == dtype]
        back = sharding.scatter_from_owners({j: results[i] for j, i in enumerate(idx) if i in results},
                                            [layouts[i] for i in idx], [owners[i] for i in idx], dtype=dtype,
                                            device=tensors[idx[0]].to_local().device)
        for j, i in enumerate(idx):
            out[i] = back[j].to(tensors[i].dtype)
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
    tensors = [ds[i] for i in whole]
    transport = [ns_dtype if specs[i].norm == "spectral" and method == "newton_schulz" else ds[i].dtype
                 for i in whole]
    layouts, owners, wholes = _to_owners(tensors, transport)
    pieces, piece_specs, spans = [], [], {}
    for j in sorted(wholes):
        parts = split_pieces(wholes[j], splits[whole[j]])
        spans[j] = (len(pieces), len(parts))
        pieces += parts
        piece_specs += [specs[whole[j]]] * len(parts)
    lmos = lmo_many(pieces, piece_specs, ns_steps=ns_steps, ns_dtype=ns_dtype, split_across_ranks=False,
                    method=method)
    results = {j: torch.cat(lmos[a:a + n]) for j, (a, n) in spans.items()}
    for j, rows in enumerate(_to_shards(results, tensors, layouts, owners, [t.dtype for t in tensors])):
        out[whole[j]] = rows
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
    layouts = [sharding.row_shards(t) for t in tensors]
    owners = sharding.assign_owners([lay.shape for lay in layouts], layouts[0].world)
    transport = dtype if method == "newton_schulz" else shards[0].dtype
    wholes = sharding.gather_to_owners(shards, layouts, owners, dtype=transport)
    splits = split_sizes or [None] * len(tensors)
    pieces, spans = [], {}
    for i in sorted(wholes):
        parts = split_pieces(wholes[i].to(shards[i].dtype), splits[i])
        spans[i] = (len(pieces), len(parts))
        pieces += parts
    ortho = orthogonalize(pieces, steps=steps, dtype=dtype, split_across_ranks=False, method=method)
    if piece_scale is not None:
        ortho = [o * piece_scale(o.shape) for o in ortho]
    results = {i: torch.cat(ortho[a:a + n]) for i, (a, n) in spans.items()}
    back = sharding.scatter_from_owners(results, layouts, owners, dtype=shards[0].dtype, device=shards[0].device)
    return [b.to(s.dtype) for b, s in zip(back, shards)]
