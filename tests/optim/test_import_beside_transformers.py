"""`import optim` / `from model import GPT` next to transformers and Hugging Face's `kernels` package (transformers
5.x imports it): from any directory after the README's setup, in either import order, and from the repository root
through `optim.kernel_api.import_ecosystem`. optim reaches the repository's kernels/ as `clipgpt_kernels`, never as
the top-level `kernels`."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import optim
from optim import kernel_api

REPO_ROOT = Path(__file__).resolve().parents[2]
HF_INSTALLED = all(importlib.util.find_spec(name) is not None for name in ("transformers", "kernels"))
needs_hf = pytest.mark.skipif(not HF_INSTALLED, reason='needs transformers and kernels: pip install -e ".[hf]"')

# Both orders; each checks that `kernels` is Hugging Face's, optim's kernels are this checkout's, and both libraries
# work: an optimizer built by optim.build steps our GPT, and transformers builds a GPT2LMHeadModel.
USE_BOTH = """
    import kernels
    assert hasattr(kernels, "get_kernel"), kernels.__file__  # Hugging Face's package owns the name
    assert optim.kernel_api.kernels.__file__ == {ours!r}, optim.kernel_api.kernels.__file__
    import torch
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=32, block_size=8))
    opt = optim.build(model, optim.OptimConfig(name="dgclip", lr=0.1, gamma=0.5, delta=0.1))
    idx = torch.randint(0, 32, (2, 8))
    model(idx, idx)[1].backward()
    opt.step()
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=32, n_positions=8))
    print("ok")
"""
ORDERS = {
    "optim_first": "import optim\nfrom model import GPT, ModelConfig\n{get_transformers}",
    "transformers_first": "{get_transformers}\nimport optim\nfrom model import GPT, ModelConfig",
}


def script(order: str, get_transformers: str) -> str:
    head = ORDERS[order].format(get_transformers=get_transformers)
    return head + "\n" + textwrap.dedent(USE_BOTH).format(ours=str(REPO_ROOT / "kernels" / "__init__.py"))


def run(python: str, code: str, cwd: Path) -> None:
    proc = subprocess.run([python, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout[-2000:] + proc.stderr[-4000:]


def test_optims_kernels_are_this_checkouts_under_their_own_name():
    assert Path(kernel_api.kernels.__file__) == REPO_ROOT / "kernels" / "__init__.py"
    assert kernel_api.kernels.__name__ == "clipgpt_kernels"
    assert sys.modules["clipgpt_kernels"] is kernel_api.kernels
    assert optim.base.kernels is kernel_api.kernels  # one copy: what tests override is what optim runs
    present = sys.modules.get("kernels")
    assert present is None or not str(getattr(present, "__file__", "")).startswith(str(REPO_ROOT))


def test_import_ecosystem_names_the_extra_of_a_missing_package(monkeypatch):
    monkeypatch.setitem(kernel_api.EXTRAS, "clipgpt_no_such_package", "eval")
    with pytest.raises(ImportError, match=r'clipgpt_no_such_package is not installed.*pip install -e "\.\[eval\]"'):
        kernel_api.import_ecosystem("clipgpt_no_such_package")


@pytest.mark.slow
@needs_hf
def test_repo_root_process_uses_transformers_beside_optim():
    """Our commands run from the repository root, where the working directory would shadow Hugging Face's
    `kernels`: import_ecosystem gives the name to the installed package first."""
    get = 'from optim.kernel_api import import_ecosystem\ntransformers = import_ecosystem("transformers")\n' \
          'GPT2LMHeadModel, GPT2Config = transformers.GPT2LMHeadModel, transformers.GPT2Config'
    run(sys.executable, script("optim_first", get), cwd=REPO_ROOT)


@pytest.mark.slow
@needs_hf
def test_user_script_in_another_directory_after_the_readme_setup(tmp_path):
    """The README's setup (`pip install -e .`, here into a fresh venv over this interpreter's packages, without
    dependencies or network), then a script in an unrelated directory imports optim, model and transformers in
    either order with no sys.path edits."""
    if importlib.util.find_spec("setuptools") is None:  # the offline install builds with this interpreter's setuptools
        pytest.skip("needs setuptools>=64 in this interpreter for an offline editable install")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--no-index", "-e", str(REPO_ROOT)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-4000:]
    elsewhere = tmp_path / "user_project"
    elsewhere.mkdir()
    for order in ORDERS:
        run(python, script(order, "from transformers import GPT2Config, GPT2LMHeadModel"), cwd=elsewhere)
    # Only optim, model and configs are put on the path: no generic name such as `kernels` or `data` of ours.
    probe = "import importlib.util as u; print([n for n in ('data', 'trainer', 'evals') if u.find_spec(n)])"
    names = subprocess.run([python, "-c", probe], cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert names.stdout.strip() == "[]", names.stdout + names.stderr
