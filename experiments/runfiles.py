"""Read a run directory written by train_gpt.py: ``metrics.jsonl`` (one record per step) and ``config.json``."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path


def read_records(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl, one per step (the last one wins if a step repeats); a torn last line of a
    run still being written is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    by_step: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            by_step[int(record["step"])] = record
    return [by_step[s] for s in sorted(by_step)]


@dataclass
class Run:
    """One run: its directory name, resolved config (nested dict) and per-step records."""
    name: str
    path: Path
    config: dict
    records: list[dict]

    @classmethod
    def load(cls, path: str | Path) -> "Run":
        path = Path(path)
        metrics = path / "metrics.jsonl"
        if not metrics.exists():
            raise FileNotFoundError(f"{path} is not a run directory: no metrics.jsonl")
        config_file = path / "config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        return cls(path.name, path, config, read_records(metrics))

    @property
    def optimizer(self) -> str:
        return self.config.get("optim", {}).get("name", "?")

    @property
    def planned_steps(self) -> int | None:
        return self.config.get("train", {}).get("steps")

    def series(self, key: str, x: str = "step") -> tuple[list[float], list[float]]:
        """(x, y) over the records that have a finite `key` (and `x`)."""
        xs, ys = [], []
        for r in self.records:
            value, where = r.get(key), r.get(x)
            if isinstance(value, (int, float)) and math.isfinite(value) and where is not None:
                xs.append(float(where))
                ys.append(float(value))
        return xs, ys

    def has(self, key: str) -> bool:
        return bool(self.series(key)[0])
