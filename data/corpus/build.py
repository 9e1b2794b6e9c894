"""Build ``stdlib_docs.jsonl``, the embedded English corpus, from the running Python.

Two kinds of documents, both written by the CPython developers and shipped with every Python
installation under the PSF License:

* the documentation topics of ``pydoc_data.topics`` (sections of the Python Language Reference
  and Library Reference that ``help()`` shows: prose about statements, data model, ...);
* per standard-library module, its docstrings (module, classes, functions), read with ``ast``
  from the source files, so no module is imported (some have side effects, e.g. ``antigravity``).

Documents are shuffled with a fixed seed, so that the validation shard (the first tokens) comes
from the same mix as the training shards. The output is committed; re-run only to refresh it:
``python -m data.corpus.build``.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import sys
import sysconfig
from pathlib import Path

CORPUS_PATH = Path(__file__).resolve().parent / "stdlib_docs.jsonl"
SEED = 20240520
# Test suites and vendored third-party code are not documentation.
SKIPPED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3"}
MIN_DOC_CHARS = 200


def topic_documents() -> list[dict]:
    """One document per ``pydoc_data.topics`` entry."""
    from pydoc_data.topics import topics

    return [
        {"text": text.strip(), "source": f"pydoc_data.topics:{name}"}
        for name, text in sorted(topics.items())
        if len(text.strip()) >= MIN_DOC_CHARS
    ]


def _docstrings(tree: ast.Module) -> list[tuple[str, str]]:
    """``(qualified name, docstring)`` for the module, its classes and functions, in source order."""
    found = []
    module_doc = ast.get_docstring(tree)
    if module_doc:
        found.append(("", module_doc))

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                doc = ast.get_docstring(child)
                if doc:
                    found.append((name, doc))
                visit(child, f"{name}.")

    visit(tree, "")
    return found


def module_documents(stdlib: Path) -> list[dict]:
    """One document per standard-library module: its docstrings, rendered like ``help()``."""
    documents = []
    for path in sorted(stdlib.rglob("*.py")):
        relative = path.relative_to(stdlib)
        if SKIPPED_DIRS & set(relative.parts):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):
            continue
        module = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
        parts = []
        for name, doc in _docstrings(tree):
            parts.append(doc if not name else f"{name}\n    " + doc.replace("\n", "\n    "))
        text = "\n\n".join(parts).strip()
        if len(text) >= MIN_DOC_CHARS:
            documents.append({"text": f"Help on module {module}:\n\n{text}", "source": f"Lib/{relative}"})
    return documents


def build(out: Path = CORPUS_PATH) -> list[dict]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    documents = topic_documents() + module_documents(stdlib)
    random.Random(SEED).shuffle(documents)
    version = ".".join(map(str, sys.version_info[:3]))
    with open(out, "w", encoding="utf-8") as handle:
        for document in documents:
            document["python"] = version
            handle.write(json.dumps(document, ensure_ascii=False) + "\n")
    return documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CORPUS_PATH)
    args = parser.parse_args()
    documents = build(args.out)
    chars = sum(len(d["text"]) for d in documents)
    print(f"wrote {len(documents)} documents, {chars} characters to {args.out}")


if __name__ == "__main__":
    main()
