"""Generate the configuration reference (every key, type, default, meaning) from the schema.

    python -m configs.reference            # print the Markdown table
    python -m configs.reference --check    # exit 1 if README.md's copy is stale
    python -m configs.reference --write    # refresh README.md between the markers
"""

from __future__ import annotations

import sys
from pathlib import Path

from configs.base import iter_fields

BEGIN, END = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown() -> str:
    from configs.schema import Config
    from optim.config import COMMON_KEYS, OPTIMIZERS

    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, type_name, default, help_text in iter_fields(Config):
        shown = "unset" if default is None else repr(default)
        lines.append(f"| `{key}` | {_cell(type_name)} | `{_cell(shown)}` | {_cell(help_text)} |")
    lines += ["", "Per-optimizer settings: a preset's table `[optim.NAME]` (NAME one of the optimizers below) holds "
              "`optim.*` keys that apply when `optim.name` is NAME, under the preset's own `[optim]` keys and the "
              "command line (`--optim.lr=...` wins; `--optim.NAME.KEY=...` edits the table). A table may only set "
              "keys its optimizer reads:", "",
              "| optimizer | reads (besides `lr`, `backend`, `cuda_graph`, `norm_in_backward`, `groups.*`, `gr.*`) | what it is |", "|---|---|---|"]
    for name, spec in OPTIMIZERS.items():
        keys = ", ".join(f"`{k}`" for k in sorted(spec.keys - COMMON_KEYS))
        lines.append(f"| `{name}` | {keys} | {_cell(spec.summary)} |")
    return "\n".join(lines) + "\n"


def readme_block(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{README} lacks the markers {BEGIN} ... {END}")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def main(argv: list[str]) -> int:
    table = markdown()
    if "--check" in argv:
        if readme_block(README.read_text()) != table:
            print("README.md's configuration reference is stale: run python -m configs.reference --write")
            return 1
        return 0
    if "--write" in argv:
        text = README.read_text()
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        README.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")
        return 0
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
