"""How runs relate: which config keys differ, which runs are seeds of one setting, and the sweep axis."""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from .runfiles import Run

# Keys that never make two runs different settings (where a run writes, its seed, its logging).
_IGNORED = re.compile(r"^(train\.out_dir|train\.seed|train\.stop_after_step|train\.log_every|log\..*)$")
_SEED_SUFFIX = re.compile(r"-s\d+$")


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value if not isinstance(value, list) else tuple(value)
    return flat


@functools.lru_cache(maxsize=1)
def schema_defaults() -> dict[str, Any]:
    """Every config key's default (dotted), to leave defaults out of labels; empty if the schema cannot load."""
    try:
        from configs.base import to_dict
        from configs.schema import Config
    except ImportError:
        return {}
    return flatten(to_dict(Config()))


def describe(setting: dict[str, Any]) -> str:
    """`{"optim.name": "dgclip", "optim.lr": 0.3, "optim.delta": 0.0}` -> `dgclip, lr=0.3` (values at their
    schema default, and unset ones (None: a key another run sets) are left out; the optimizer name comes first, without
    its key)."""
    defaults = schema_defaults()
    parts = [str(setting["optim.name"])] if "optim.name" in setting else []
    parts += [f"{k.removeprefix('optim.')}={v}" for k, v in sorted(setting.items())
              if k != "optim.name" and v is not None and not (k in defaults and defaults[k] == v)]
    return ", ".join(parts)


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """Config keys (dotted) whose values are not the same in every run, seeds and paths left out."""
    flats = [flatten(r.config) for r in runs]
    keys = sorted(set().union(*flats)) if flats else []
    return [k for k in keys if not _IGNORED.match(k) and len({repr(f.get(k)) for f in flats}) > 1]


@dataclass
class Group:
    """Runs of one setting that differ only by seed."""
    label: str
    runs: list[Run]
    setting: dict[str, Any]  # the differing keys' values

    @property
    def legend(self) -> str:
        """The plots' name of the group: the run's own name (as in the report's table), or the setting's label
        and how many seeds it has."""
        return self.runs[0].name if len(self.runs) == 1 else f"{self.label} ({len(self.runs)} seeds)"


def group_runs(runs: Sequence[Run]) -> list[Group]:
    keys = differing_keys(runs)
    groups: dict[str, Group] = {}
    for run in runs:
        flat = flatten(run.config)
        setting = {k: flat.get(k) for k in keys}
        identity = repr(sorted(setting.items()))
        if identity not in groups:
            groups[identity] = Group(_SEED_SUFFIX.sub("", run.name), [], setting)
        groups[identity].runs.append(run)
    return list(groups.values())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class SweepAxis:
    key: str  # the swept config key (x axis)
    numeric: bool
    lines: dict[str, list[tuple[Any, Group]]]  # line label -> (x value, group), sorted by x


def sweep_axis(groups: Sequence[Group], key: Optional[str] = None) -> Optional[SweepAxis]:
    """The sweep in these groups: `key` if given, else the differing key with the most values that varies within
    at least one line (a line = groups equal in every other differing key). None if there is no sweep."""
    keys = sorted({k for g in groups for k in g.setting})
    if key is not None and key not in keys:
        return None  # the key does not differ between these runs
    candidates = [key] if key is not None else sorted(
        (k for k in keys if k != "optim.name"), key=lambda k: -len({repr(g.setting.get(k)) for g in groups}))
    for candidate in candidates:
        lines: dict[str, list[tuple[Any, Group]]] = {}
        for group in groups:
            others = {k: v for k, v in group.setting.items() if k != candidate}
            label = describe({k: v for k, v in others.items() if k == "optim.name" or _varies(groups, k, candidate)})
            label = label or group.runs[0].optimizer
            lines.setdefault(label, []).append((group.setting.get(candidate), group))
        if key is not None or any(len(points) > 1 for points in lines.values()):
            numeric = all(_is_number(x) for points in lines.values() for x, _ in points)
            for points in lines.values():
                points.sort(key=lambda p: p[0] if numeric else str(p[0]))
            return SweepAxis(candidate, numeric, lines)
    return None


def _varies(groups: Sequence[Group], key: str, axis: str) -> bool:
    return key != axis and len({repr(g.setting.get(key)) for g in groups}) > 1
