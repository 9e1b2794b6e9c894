"""Turn documents (hub datasets or local files, through ``datasets``) into GPT-2 token shards."""

from .pipeline import PrepareConfig, Summary, default_prefix, prepare
from .sources import PrepareError, SourceSpec

__all__ = ["PrepareConfig", "PrepareError", "SourceSpec", "Summary", "default_prefix", "prepare"]
