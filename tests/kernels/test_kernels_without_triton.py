"""`import kernels` and `import optim` work without triton (it is a Linux-only dependency): the torch reference
runs, and asking for backend="triton" says that triton is missing. Simulated by blocking the import."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["triton"] = None  # `import triton` now raises ImportError, as on a machine without it
    sys.modules["triton.language"] = None
    import torch
    import optim
    from optim.kernel_api import kernels
    from clipgpt_kernels.triton_common import HAVE_TRITON
    assert not HAVE_TRITON
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(8, 4))
    opt = optim.DeltaGClip([p], lr=0.1, gamma=0.5, delta=0.1, momentum=0.9)
    before = p.detach().clone()
    p.grad = torch.randn(8, 4)
    opt.step()
    assert not torch.equal(p.detach(), before)
    print("norm", float(opt.stats()["grad_norm"]))
    try:
        kernels.global_norm([p.grad], backend="triton")
    except RuntimeError as err:
        print("ERROR", err)
""")


def test_kernels_and_optim_import_and_step_without_triton():
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "norm " in proc.stdout
    assert "ERROR kernels.global_norm: backend='triton' needs the triton package, which is not installed" \
        in proc.stdout, proc.stdout
