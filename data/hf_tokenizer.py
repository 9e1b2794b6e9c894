"""The GPT-2 tokenizer in Hugging Face's files (vocab.json, merges.txt), built offline from the vendored ranks.

tiktoken's ranks file lists every token's bytes with its rank; the HF format spells tokens as printable strings
and lists the merges in order. Both are recovered from the ranks alone:

- Printable spelling (GPT-2's byte-level alphabet): the 188 printable bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand
  for themselves; the other 68 bytes, in increasing order, become the characters U+0100, U+0101, ... A token is
  the concatenation of its bytes' characters.
- Merges: byte-pair encoding merges pairs in rank order, so the merge that made a token of rank r is found by
  encoding the token's own bytes with only the tokens of rank < r: that stops at exactly two parts, whose
  concatenation is the token. Listed in the order of r, they are GPT-2's merges.txt.

The result encodes text exactly as `data.tokenizer.gpt2_encoding()` (tests/data/test_hf_tokenizer.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from data.tokenizer import EOT, EOT_TEXT, load_ranks

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def byte_alphabet() -> dict[int, str]:
    """GPT-2's printable character for each byte (see module doc)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + i) for i, b in enumerate(others)})
    return table


def merge_parts(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The pair whose merge made `token`: BPE of its bytes using only tokens ranked below it."""
    limit = ranks[token]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best, at = limit, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1], limit)
            if rank < best:
                best, at = rank, i
        if at < 0:
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {limit}) is not one merge of two lower-ranked tokens")
    return parts[0], parts[1]


def hf_vocab_and_merges(ranks: dict[bytes, int] | None = None) -> tuple[dict[str, int], list[str]]:
    """(vocab.json's mapping, merges.txt's lines without its header) of the GPT-2 ranks."""
    ranks = load_ranks() if ranks is None else ranks
    alphabet = byte_alphabet()

    def spell(token: bytes) -> str:
        return "".join(alphabet[b] for b in token)

    vocab = {spell(token): rank for token, rank in ranks.items()}
    vocab[EOT_TEXT] = EOT
    merges = [" ".join(spell(part) for part in merge_parts(ranks, token))
              for token, rank in sorted(ranks.items(), key=lambda item: item[1]) if len(token) > 1]
    return vocab, merges


def write_tokenizer_files(directory: str | Path, model_max_length: int = 1024) -> list[Path]:
    """Write the GPT-2 tokenizer's HF files (TOKENIZER_FILES) into `directory`; return their paths."""
    directory = Path(directory)
    vocab, merges = hf_vocab_and_merges()
    special = {"bos_token": EOT_TEXT, "eos_token": EOT_TEXT, "unk_token": EOT_TEXT}
    contents = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
        "tokenizer_config.json": json.dumps({**special, "tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False,
                                             "model_max_length": model_max_length}, indent=2),
        "special_tokens_map.json": json.dumps(special, indent=2),
    }
    paths = []
    for name in TOKENIZER_FILES:
        (directory / name).write_text(contents[name], encoding="utf-8")
        paths.append(directory / name)
    return paths
