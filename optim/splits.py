"""Fused parameters as several layers: split sizes along one axis, carried as data in the parameter groups.

A fused tensor such as the attention's `qkv` weight (3*d_attn, d) stacks the q, k and v matrices along dim 0. The
reference Scion model has three separate matrices, each with its own spectral LMO, shape scaling and dual-norm term
(as modded-nanogpt's Muon orthogonalizes q, k and v separately). Here the model keeps the fused matmul, and a param
group carries `split_sizes`, one entry per parameter: None (one layer), the sizes along dim 0 of the sub-matrices it
holds, or `{"dim": 1, "sizes": [...]}` for a tensor stored (d_in, d_out) such as Hugging Face GPT-2's Conv1D `c_attn`
(768, 2304). Scion, Clipped Scion and Muon treat every piece as its own layer; nothing in the LMO code knows q/k/v.

Config: `optim.groups.<role>.splits`, a list of "GLOB=N" (N equal parts) or "GLOB=a,b,c" (explicit sizes), optionally
with "@AXIS" (0 or 1), matched against the parameter names of that role, e.g. `["blocks.*.attn.qkv.weight=3"]` (the
hidden-role default) or `["transformer.h.*.attn.c_attn.weight=3@1"]`. Without "@AXIS" the axis is the output axis:
dim 0, or dim 1 when the role is `transpose = true`. For a 2-D parameter that is not an `nn.Linear` weight, in a role
without `transpose`, whose both axes the rule could cut, that is a guess: `optim.build` refuses it and asks for the
axis (it cannot tell an (out, in) tensor from an (in, out) one).
"""
from __future__ import annotations

from fnmatch import fnmatchcase

import torch


def parse_split_rule(text: str, key: str) -> tuple[str, list[int], int | None]:
    """("GLOB", [N] or [a, b, c], axis or None) for "GLOB=N", "GLOB=a,b,c", each optionally "@AXIS"; a clear error
    naming `key` otherwise."""
    pattern, sep, spec = text.rpartition("=")
    sizes, at, axis_text = spec.partition("@")
    try:
        numbers = [int(s) for s in sizes.split(",")]
        axis = int(axis_text) if at else None
    except ValueError:
        numbers, axis = [], None
    if not sep or not pattern or not numbers or any(n < 1 for n in numbers) or (at and axis not in (0, 1)):
        raise ValueError(f"{key}: bad split rule {text!r}; expected 'GLOB=N' (N equal parts) or 'GLOB=a,b,c' "
                         f"(sizes), optionally with '@0' or '@1' (the axis), e.g. 'blocks.*.attn.qkv.weight=3' or "
                         f"'transformer.h.*.attn.c_attn.weight=3@1'")
    return pattern, numbers, axis


def _sizes_along(length: int, numbers: list[int]) -> list[int] | None:
    """The piece sizes that cut `length` under the rule's numbers, or None when they do not."""
    if len(numbers) == 1:
        return [length // numbers[0]] * numbers[0] if length % numbers[0] == 0 else None
    return list(numbers) if sum(numbers) == length else None


def split_sizes_for(name: str, shape: torch.Size, rules: list[str], key: str, *, transpose: bool = False,
                    known_layout: bool = True) -> list[int] | dict | None:
    """The split of parameter `name` under `rules` (first matching rule): None, sizes along dim 0, or
    {"dim": 1, "sizes": [...]}. Without an explicit axis the rule cuts the output axis (dim 1 if `transpose`, else
    dim 0); `known_layout=False` (a 2-D tensor that is not an nn.Linear weight) refuses such a rule where it could cut
    either axis."""
    for text in rules:
        pattern, numbers, axis = parse_split_rule(text, key)
        if not fnmatchcase(name, pattern):
            continue
        if numbers == [1]:
            return None
        if len(shape) == 0 or (axis == 1 and len(shape) < 2):
            raise ValueError(f"{key}: rule {text!r} cuts axis {axis or 0} of {name!r}, which has shape "
                             f"{tuple(shape)}")
        if axis is None:
            axis = 1 if transpose and len(shape) == 2 else 0
            others = [a for a in range(len(shape)) if a != axis and _sizes_along(shape[a], numbers)]
            if not known_layout and not transpose and len(shape) == 2 and others:
                raise ValueError(
                    f"{key}: rule {text!r} could cut {name!r} (shape {tuple(shape)}) along dim 0 or dim 1, and its "
                    f"layout is not known (not an nn.Linear weight): write the axis, '{pattern}={spec_of(numbers)}@0' "
                    f"for (out, in) or '{pattern}={spec_of(numbers)}@1' for (in, out) storage such as Hugging Face's "
                    f"Conv1D, or set transpose = true on the role")
        sizes = _sizes_along(shape[axis], numbers)
        if sizes is None and len(numbers) == 1:
            raise ValueError(f"{key}: rule {text!r} splits {name!r} (dim {axis} = {shape[axis]}) into {numbers[0]} "
                             f"equal parts, but {shape[axis]} is not divisible by {numbers[0]}")
        if sizes is None:
            raise ValueError(f"{key}: rule {text!r} gives sizes summing to {sum(numbers)} for {name!r}, whose dim "
                             f"{axis} is {shape[axis]}")
        return sizes if axis == 0 else {"dim": axis, "sizes": sizes}
    return None


def spec_of(numbers: list[int]) -> str:
    return ",".join(str(n) for n in numbers)


def split_axis(entry) -> tuple[list[int] | None, int]:
    """(sizes, axis) of one `split_sizes` entry (None, a list along dim 0, or {"dim": d, "sizes": [...]})."""
    if isinstance(entry, dict):
        return list(entry["sizes"]), int(entry["dim"])
    return (None if entry is None else list(entry)), 0


def check_group_splits(group: dict, where: str) -> None:
    """Validate a param group's optional `split_sizes` (one entry per parameter, None or sizes summing to dim 0);
    `where` names the group in the error ("param group 1 (hidden)")."""
    sizes = group.get("split_sizes")
    if sizes is None:
        return
    if len(sizes) != len(group["params"]):
        raise ValueError(f"{where}: split_sizes has {len(sizes)} entries but the group has "
                         f"{len(group['params'])} parameters (use None for a parameter that is not split)")
    for p, entry in zip(group["params"], sizes):
        if isinstance(entry, dict) and (set(entry) != {"dim", "sizes"} or entry["dim"] not in (0, 1)):
            raise ValueError(f"{where}: split_sizes entry {entry!r} must be None, a list of sizes along dim 0 or "
                             f"{{'dim': 0 or 1, 'sizes': [...]}}")
        s, axis = split_axis(entry)
        if s is not None and (p.ndim <= axis or sum(s) != p.size(axis) or any(int(n) < 1 for n in s)):
            raise ValueError(f"{where}: split_sizes {list(s)} do not partition dim {axis} of a parameter "
                             f"of shape {tuple(p.shape)}")


def sizes_by_param(group: dict) -> dict[torch.Tensor, list[int] | None]:
    """{param: split sizes or None} of a group (empty when the group has no `split_sizes`)."""
    return dict(zip(group["params"], group.get("split_sizes") or []))


def split_pieces(t: torch.Tensor, entry) -> list[torch.Tensor]:
    """Views of `t` cut by one `split_sizes` entry (along dim 0: contiguous when `t` is), or [t] when it is None."""
    sizes, axis = split_axis(entry)
    return [t] if sizes is None else list(t.split(sizes, dim=axis))


def row_splits(entry, where: str) -> list[int] | None:
    """Sizes along dim 0 of an entry, for code that cuts rows only (the sharded owner pipeline); a clear error for
    an entry along dim 1."""
    sizes, axis = split_axis(entry)
    if axis != 0:
        raise ValueError(f"{where}: a split along dim {axis} ({entry!r}) is not supported for sharded (fsdp/hsdp) "
                         f"parameters; the owner pipeline cuts rows")
    return sizes
