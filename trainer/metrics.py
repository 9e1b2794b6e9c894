"""Run records: ``metrics.jsonl`` (one JSON object per step), the console line, run info, optional wandb."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

# Dense bf16 tensor-core peak FLOP/s, for MFU.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


def peak_flops(device_name: str) -> float | None:
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in device_name:
            return flops
    return None


@contextlib.contextmanager
def naming_file(path: Path):
    """Re-raise an OSError of the block with ``path`` as its file name (a failed write or close of a buffered file
    has none), so a full disk is reported as the file it hit (``no space left on device writing .../metrics.jsonl``)."""
    try:
        yield
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err


class MetricsWriter:
    """Appends one JSON line per record to ``<out_dir>/metrics.jsonl`` (only where ``enabled``, i.e. rank 0)."""

    def __init__(self, out_dir: str | Path, enabled: bool):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (left by a killed run that is now resumed from ``step``; all of
        them on a fresh start) and lines that are not JSON (a write torn by a crash), with a warning."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for number, line in enumerate(self.path.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                warnings.warn(f"{self.path}: dropping line {number}, not a complete JSON record (a write cut "
                              f"short by a crash): {line[:60]!r}")
                continue
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line)
        tmp = self.path.with_suffix(".jsonl.tmp")
        with naming_file(self.path):
            tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with naming_file(self.path), open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")


def format_line(record: dict, steps: int) -> str:
    parts = [f"step {record['step']:>6}/{steps}"]
    for key, fmt in (("train_loss", "loss {:.4f}"), ("val_loss", "val {:.4f}"), ("lr", "lr {:.2e}"),
                     ("grad_norm", "|g| {:.3f}"), ("clip_factor", "clip {:.3f}"), ("tokens_per_s", "{:,.0f} tok/s"),
                     ("mfu", "mfu {:.1%}"), ("eta_s", "eta {:.0f}s")):
        if record.get(key) is not None:
            parts.append(fmt.format(record[key]))
    if record.get("skipped"):
        parts.append("SKIPPED (non-finite)")
    return " | ".join(parts)


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 - optional packages
        return None


def run_info(world_size: int, device: str, device_name: str) -> dict:
    """Versions, git revision and machine facts recorded next to every run."""
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except Exception:  # noqa: BLE001 - not a git checkout, or git missing
            return None

    return {
        "git_revision": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "command": sys.argv,
        "python": platform.python_version(),
        "versions": {m: _version(m) for m in ("torch", "triton", "numpy", "tiktoken")},
        "host": platform.node(),
        "world_size": world_size,
        "device": device,
        "device_name": device_name,
    }


class WandbLogger:
    """Rank-0 wandb run; offline mode needs no account. Missing wandb disables it with a warning."""

    def __init__(self, log_cfg, config: dict, out_dir: str | Path):
        self.run = None
        try:
            import wandb
        except ImportError:
            warnings.warn("log.wandb=true but wandb is not installed; continuing without it")
            return
        self.run = wandb.init(project=log_cfg.wandb_project, name=log_cfg.wandb_run_name or Path(out_dir).name,
                              group=log_cfg.wandb_group, mode=log_cfg.wandb_mode, config=config,
                              dir=str(out_dir), resume="allow")

    def log(self, record: dict) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"},
                         step=record["step"])

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
