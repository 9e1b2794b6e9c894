"""The ``data`` config section: where the token shards are and how validation is read."""

from __future__ import annotations

from dataclasses import dataclass

from configs.base import field


@dataclass
class DataConfig:
    dir: str = field("embedded", help="directory of .bin token shards (*_train_*.bin, *_val_*.bin), or 'embedded' "
                                      "for the corpus shipped with the repo (tokenized on first use)")
    shuffle_shards: bool = field(True, help="visit the train shards in a seeded random order each epoch")
    check_tokens: bool = field(True, help="scan every shard once at start-up for token ids >= model.vocab_size")

    def validate(self) -> None:
        if not self.dir:
            raise ValueError("data.dir must be a directory of shards or 'embedded', got an empty string")
