"""GPT-2 BPE through tiktoken, built offline from the vendored ranks file.

``tiktoken.get_encoding("gpt2")`` downloads its ranks at run time, which fails on offline
machines and clusters. ``data/assets/gpt2.tiktoken`` holds the same ranks (tiktoken's
``r50k_base.tiktoken``, copied from the openai-whisper sdist, MIT); we check its sha256 and
build the encoding with tiktoken's GPT-2 pattern and ``<|endoftext|>`` = 50256.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from pathlib import Path

import tiktoken

RANKS_PATH = Path(__file__).resolve().parent / "assets" / "gpt2.tiktoken"
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
ENCODING_NAME = "gpt2"
EOT_TEXT = "<|endoftext|>"
EOT = 50256
VOCAB_SIZE = 50257
# tiktoken's r50k/gpt2 pattern: equivalent to the original GPT-2 regex, written to run faster.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


class TokenizerAssetError(RuntimeError):
    """The vendored ranks file is missing or is not the expected one."""


def load_ranks(path: Path = RANKS_PATH, expected_sha256: str = RANKS_SHA256) -> dict[bytes, int]:
    """Parse a ``.tiktoken`` ranks file (``base64-token rank`` per line) after checking its hash."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise TokenizerAssetError(f"cannot read GPT-2 ranks file {path}: {exc}") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected_sha256:
        raise TokenizerAssetError(
            f"GPT-2 ranks file {path} has sha256 {digest}, expected {expected_sha256}"
        )
    ranks: dict[bytes, int] = {}
    for line_number, line in enumerate(raw.splitlines(), start=1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as exc:
            raise TokenizerAssetError(f"{path}:{line_number}: malformed ranks line") from exc
    return ranks


@functools.lru_cache(maxsize=None)
def gpt2_encoding() -> tiktoken.Encoding:
    """The GPT-2 (r50k) ``tiktoken.Encoding``, identical to ``tiktoken.get_encoding("gpt2")``."""
    return tiktoken.Encoding(
        name=ENCODING_NAME,
        pat_str=GPT2_PATTERN,
        mergeable_ranks=load_ranks(),
        special_tokens={EOT_TEXT: EOT},
        explicit_n_vocab=VOCAB_SIZE,
    )
