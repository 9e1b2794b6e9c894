"""Test-wide setup: import the repo's top-level packages, run on few threads, share small fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# transformers imports Hugging Face's `kernels` package, which the repo's kernels/ directory would shadow from here (the
# root is first on sys.path). Our code reaches ours as `clipgpt_kernels` (optim/kernel_api.py), so the name goes to the
# installed package and tests can import transformers in this process.
from optim.kernel_api import claim_kernels_name_for_installed_package  # noqa: E402

claim_kernels_name_for_installed_package()
