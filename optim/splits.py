"""Fused parameters as several layers: split sizes along dim 0, carried as data in the parameter groups.

A fused tensor such as the attention's `qkv` weight (3*d_attn, d) stacks the q, k and v matrices along dim 0. The
reference Scion model has three separate matrices, each with its own spectral LMO, shape scaling and dual-norm term
(as modded-nanogpt's Muon orthogonalizes q, k and v separately). Here the model keeps the fused matmul, and a param
group carries `split_sizes`, one entry per parameter: None (one layer) or the sizes along dim 0 of the sub-matrices
it holds. Scion, Clipped Scion and Muon treat every piece as its own layer; nothing in the LMO code knows about q/k/v.

Config: `optim.groups.<role>.splits`, a list of "GLOB=N" (N equal parts) or "GLOB=a,b,c" (explicit sizes), matched
against the parameter names of that role, e.g. `["blocks.*.attn.qkv.weight=3"]` (the hidden-role default).
"""
from __future__ import annotations

from fnmatch import fnmatchcase

import torch


def parse_split_rule(text: str, key: str) -> tuple[str, list[int]]:
    """("GLOB", [N]) for "GLOB=N" or ("GLOB", [a, b, c]) for "GLOB=a,b,c"; a clear error naming `key` otherwise."""
    pattern, sep, sizes = text.rpartition("=")
    try:
        numbers = [int(s) for s in sizes.split(",")]
    except ValueError:
        numbers = []
    if not sep or not pattern or not numbers or any(n < 1 for n in numbers):
        raise ValueError(f"{key}: bad split rule {text!r}; expected 'GLOB=N' (N equal parts along dim 0) or "
                         f"'GLOB=a,b,c' (sizes along dim 0), e.g. 'blocks.*.attn.qkv.weight=3'")
    return pattern, numbers


def split_sizes_for(name: str, shape: torch.Size, rules: list[str], key: str) -> list[int] | None:
    """The split sizes along dim 0 of parameter `name` under `rules` (first matching rule), or None."""
    for text in rules:
        pattern, numbers = parse_split_rule(text, key)
        if not fnmatchcase(name, pattern):
            continue
        rows = shape[0] if len(shape) else 0
        if len(numbers) == 1:
            if numbers[0] == 1:
                return None
            if rows % numbers[0]:
                raise ValueError(f"{key}: rule {text!r} splits {name!r} (dim 0 = {rows}) into {numbers[0]} equal "
                                 f"parts, but {rows} is not divisible by {numbers[0]}")
            return [rows // numbers[0]] * numbers[0]
        if sum(numbers) != rows:
            raise ValueError(f"{key}: rule {text!r} gives sizes summing to {sum(numbers)} for {name!r}, whose dim 0 "
                             f"is {rows}")
        return numbers
    return None


def check_group_splits(group: dict, where: str) -> None:
    """Validate a param group's optional `split_sizes` (one entry per parameter, None or sizes summing to dim 0);
    `where` names the group in the error ("param group 1 (hidden)")."""
    sizes = group.get("split_sizes")
    if sizes is None:
        return
    if len(sizes) != len(group["params"]):
        raise ValueError(f"{where}: split_sizes has {len(sizes)} entries but the group has "
                         f"{len(group['params'])} parameters (use None for a parameter that is not split)")
    for p, s in zip(group["params"], sizes):
        if s is not None and (p.ndim == 0 or sum(s) != p.size(0) or any(int(n) < 1 for n in s)):
            raise ValueError(f"{where}: split_sizes {list(s)} do not partition dim 0 of a parameter "
                             f"of shape {tuple(p.shape)}")


def sizes_by_param(group: dict) -> dict[torch.Tensor, list[int] | None]:
    """{param: split sizes or None} of a group (empty when the group has no `split_sizes`)."""
    return dict(zip(group["params"], group.get("split_sizes") or []))


def split_pieces(t: torch.Tensor, sizes: list[int] | None) -> list[torch.Tensor]:
    """Views of `t` along dim 0 (contiguous when `t` is), or [t] when `sizes` is None."""
    return [t] if sizes is None else list(t.split(list(sizes), dim=0))
