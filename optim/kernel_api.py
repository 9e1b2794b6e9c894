"""How optim reaches the repository's kernels/ package without owning the top-level name `kernels`.

Hugging Face's `kernels` package (which transformers 5.x imports) is also called `kernels`. One process can hold only
one module of that name, so `import kernels` in optim would break transformers when ours came first and load theirs
when theirs came first. Instead:

- `kernels` (this module's attribute) is kernels/ from this checkout (the directory beside optim/), loaded by path
  under the name `clipgpt_kernels`, which nothing else uses: `import optim` works next to transformers in either
  order and from any directory, and optim always runs the kernels of its own checkout. Code that shares state with
  optim's kernels (tests overriding chunk tunings, patching `global_norm`) imports them from here or as
  `clipgpt_kernels.<module>` after this one; kernels/ itself uses relative imports only, so it works under either name
  (`python -m kernels.bench` from the repository root still runs it as `kernels`).
- `import_ecosystem(name)` imports an optional ecosystem package (transformers, lm_eval). Run from the repository
  root, the working directory comes first on `sys.path` and `import kernels` would find our kernels/ directory
  instead of Hugging Face's; so first it imports the other installed `kernels` under its own name, from `sys.path`
  without this checkout. A missing package is one ImportError naming the extra that installs it.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

MODULE_NAME = "clipgpt_kernels"
CHECKOUT = Path(__file__).resolve().parent.parent
DIRECTORY = CHECKOUT / "kernels"
EXTRAS = {"transformers": "hf", "kernels": "hf", "lm_eval": "eval"}  # pyproject.toml's optional dependencies


def _load_ours() -> ModuleType:
    module = sys.modules.get(MODULE_NAME)
    if module is not None:
        if Path(module.__file__).resolve().parent != DIRECTORY:
            raise ImportError(f"{MODULE_NAME} is already loaded from {module.__file__}, but this optim "
                              f"({CHECKOUT}) needs {DIRECTORY}: two checkouts of the repository in one process")
        return module
    if not (DIRECTORY / "chunk_table.py").is_file():  # e.g. a non-editable install: site-packages/kernels is not ours
        raise ImportError(f"optim needs the repository's kernels/ beside it, and {DIRECTORY} is not it: install the "
                          f"checkout in editable mode (pip install -e .) or run from the repository root")
    spec = importlib.util.spec_from_file_location(MODULE_NAME, DIRECTORY / "__init__.py",
                                                  submodule_search_locations=[str(DIRECTORY)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[MODULE_NAME]
        raise
    return module


kernels = _load_ours()


def _outside_checkout(entry: str) -> bool:
    try:
        return Path(entry or ".").resolve() != CHECKOUT
    except OSError:
        return True


def claim_kernels_name_for_installed_package() -> None:
    """Import the installed (non-repository) `kernels` package, Hugging Face's, under its own name if it exists and
    the name is still free, so that this checkout's kernels/ directory cannot shadow it. No-op otherwise."""
    present = sys.modules.get("kernels")
    if present is not None:
        if not _outside_checkout(str(Path(getattr(present, "__file__", None) or "/").parent.parent)):
            raise ImportError("this process imported the repository's kernels/ as `kernels`, the name Hugging Face's "
                              "kernels package (needed by transformers) has; reach ours through optim.kernel_api")
        return
    spec = importlib.machinery.PathFinder.find_spec("kernels", [p for p in sys.path if _outside_checkout(p)])
    if spec is None or spec.loader is None:  # none installed (or only a namespace portion)
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["kernels"]
        raise


def import_ecosystem(name: str) -> ModuleType:
    """Import the optional package `name` (e.g. "transformers", "lm_eval") from any directory, the repository root
    included; an ImportError naming the extra to install when it is missing."""
    claim_kernels_name_for_installed_package()
    if importlib.util.find_spec(name) is None:
        extra = EXTRAS.get(name)
        how = f'pip install -e ".[{extra}]"' if extra else f"pip install {name}"
        raise ImportError(f"{name} is not installed; it is optional: {how}")
    return importlib.import_module(name)
