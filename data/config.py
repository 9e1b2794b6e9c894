"""The ``data`` config section: where the token shards are and how validation is read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from configs.base import Section, field, non_empty


@dataclass
class DataConfig(Section):
    KEY = "data"

    dir: str = field("embedded", check=non_empty, help="directory of .bin token shards (*_train_*.bin, *_val_*.bin), or 'embedded' "
                                      "for the corpus shipped with the repo (tokenized on first use)")
    shuffle_shards: bool = field(True, help="visit the train shards in a seeded random order each epoch")
    check_tokens: bool = field(True, help="scan every shard once at start-up for token ids >= model.vocab_size")
    hellaswag: Optional[str] = field(None, help="HellaSwag jsonl (original format) or hub dataset id for "
                                                "train.hellaswag_every; see python -m evals.hellaswag")

