"""Runs the Triton kernel checks (tests/kernels/interpreted_kernels.py) in their own process.

TRITON_INTERPRET must be set before triton decorates the kernels, i.e. before ``import kernels``; other test
files import kernels normally in this session, so the interpreter run gets a fresh interpreter process.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKS = Path(__file__).with_name("interpreted_kernels.py")


def run_checks(extra_env: dict[str, str]) -> None:
    env = dict(os.environ, **extra_env)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CHECKS)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]


def test_triton_kernels_in_interpreter():
    run_checks({"TRITON_INTERPRET": "1"})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_kernels_on_gpu():
    run_checks({"TRITON_INTERPRET": "0"})
