"""Distributed, resumable readers of token shards: the training stream and the fixed validation set.

Both cut sequences of ``seq_len`` tokens from memory-mapped ``.bin`` shards (see ``data/shards.py``).
A *global batch* is ``batch_size`` sequences taken from one contiguous stretch of
``batch_size * seq_len + 1`` tokens of the current shard (targets are the inputs shifted by one).
Rank ``r`` of ``W`` reads only its own rows: micro-step ``k`` gets rows ``[(k*W + r)*b, (k*W + r + 1)*b)``
with ``b = micro_batch_size``. The position advances by the same amount on every rank, so the loader
state is identical across ranks and independent of the world size: a run can resume on a different
number of GPUs as long as the global batch is unchanged.

With ``device`` set, a batch travels as uint16 tokens (a quarter of int64's bytes): one pinned host buffer per
global batch, one non-blocking copy to the device, and the int64 conversion there. ``prefetch()`` reads the next
batch ahead (the trainer calls it once the step's device work is queued), so the host reading and the copy overlap
the device's compute; ``state_dict()`` still names the position after the last batch *returned*.

With ``vocab_size`` every batch is guarded where it is read: the max over its uint16 rows (microseconds, on the host)
must be below ``vocab_size``, else a :class:`~data.shards.ShardError` names the shard and the token's offset, whatever
a start-up scan or its cache said (a shard rewritten in place) and with ``data.check_tokens=false``; no id the model
has no row for reaches an embedding (a raw IndexError on CPU, a device-side assert on CUDA). ``check_tokens``
additionally scans each whole shard when it is first opened.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from data.shards import HEADER_BYTES, ShardError, list_shards, open_shard


def token_error(path: Path, token: int, offset: int, vocab_size: int) -> ShardError:
    """The error of a token id the model has no row for, naming the shard and where in it (token and byte offset)."""
    return ShardError(f"{path}: token id {token} at token offset {offset} (byte {HEADER_BYTES + 2 * offset}) is >= "
                      f"model.vocab_size {vocab_size}: the shard is corrupt or was changed after it was scanned; "
                      f"restore or re-prepare it (python -m data.inspect {path.parent} lists every bad shard)")


class TrainLoader:
    """Deterministic stream of global batches over the train shards; ``state_dict()`` is the exact position."""

    def __init__(self, shard_paths: list[Path], *, seq_len: int, batch_size: int, micro_batch_size: int,
                 rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True,
                 vocab_size: int | None = None, check_tokens: bool = True, device: torch.device | str | None = None):
        if batch_size % (micro_batch_size * world_size):
            raise ValueError(f"train.batch_size ({batch_size}) must be a multiple of train.micro_batch_size "
                             f"({micro_batch_size}) x world size ({world_size})")
        self.seq_len, self.batch_size, self.micro_batch_size = seq_len, batch_size, micro_batch_size
        self.rank, self.world_size, self.seed, self.shuffle = rank, world_size, seed, shuffle
        self.vocab_size, self.check_tokens = vocab_size, check_tokens
        self.span = batch_size * seq_len + 1  # tokens one global batch covers
        self.grad_accum_steps = batch_size // (micro_batch_size * world_size)
        self.paths = self._usable_shards([Path(p) for p in shard_paths])
        self._open: dict[int, np.ndarray] = {}
        self.epoch, self.shard, self.pos = 0, 0, 0
        self.device = None if device is None else torch.device(device)
        self._prefetched: list | None = None  # the next batch, read ahead by prefetch()
        self._state_before_prefetch: tuple[int, int, int] | None = None

    def _usable_shards(self, paths: list[Path]) -> list[Path]:
        if not paths:
            raise ValueError("no train shards given (expected files named *_train_*.bin)")
        usable = []
        for path in paths:
            tokens = open_shard(path, vocab_size=None, check_tokens=False)
            if len(tokens) >= self.span:
                usable.append(path)
            else:
                warnings.warn(f"{path}: {len(tokens)} tokens, fewer than one global batch ({self.span}); skipped")
        if not usable:
            raise ValueError(f"no train shard holds one global batch of {self.span} tokens "
                             f"(train.batch_size x model.block_size + 1); first shard: {paths[0]}")
        return usable

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.paths))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.paths))

    def _tokens(self, shard_index: int) -> np.ndarray:
        if shard_index not in self._open:
            self._open[shard_index] = open_shard(self.paths[shard_index], vocab_size=self.vocab_size,
                                                 check_tokens=self.check_tokens)
        return self._open[shard_index]

    def _read(self) -> torch.Tensor:
        """This rank's tokens of the next global batch, (grad_accum_steps, micro_batch * seq_len + 1) uint16."""
        tokens = self._tokens(int(self._order(self.epoch)[self.shard]))
        while self.pos + self.span > len(tokens):  # the shard's tail is shorter than a batch: next shard
            self.pos, self.shard = 0, self.shard + 1
            if self.shard == len(self.paths):
                self.shard, self.epoch = 0, self.epoch + 1
            tokens = self._tokens(int(self._order(self.epoch)[self.shard]))
        b, t = self.micro_batch_size, self.seq_len
        rows = np.empty((self.grad_accum_steps, b * t + 1), dtype=np.uint16)
        starts = [self.pos + (k * self.world_size + self.rank) * b * t for k in range(self.grad_accum_steps)]
        for k, start in enumerate(starts):
            rows[k] = tokens[start:start + b * t + 1]
        if self.vocab_size is not None and int(rows.max()) >= self.vocab_size:  # microseconds; before any device
            k, col = divmod(int(np.argmax(rows >= self.vocab_size)), rows.shape[1])
            path = self.paths[int(self._order(self.epoch)[self.shard])]
            raise token_error(path, int(rows[k, col]), starts[k] + col, self.vocab_size)
        self.pos += self.batch_size * t
        return torch.from_numpy(rows)

    def _micro_batches(self, rows: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """uint16 rows -> [(inputs, targets), ...] int64 on ``self.device``, converted there."""
        if self.device is not None and self.device.type == "cuda":
            rows = rows.pin_memory().to(self.device, non_blocking=True)
        elif self.device is not None:
            rows = rows.to(self.device)
        rows = rows.to(torch.int64)
        b, t = self.micro_batch_size, self.seq_len
        return [(row[:-1].view(b, t), row[1:].view(b, t)) for row in rows]

    def next_batch(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's micro-batches ``[(inputs, targets), ...]`` (int64, on ``device``; CPU if None) of the next
        global batch: the prefetched one if there is one."""
        if self._prefetched is not None:
            batch, self._prefetched, self._state_before_prefetch = self._prefetched, None, None
            return batch
        return self._micro_batches(self._read())

    def prefetch(self) -> None:
        """Read the next global batch now and start its copy to the device; ``next_batch()`` returns it."""
        if self._prefetched is None:
            self._state_before_prefetch = (self.epoch, self.shard, self.pos)
            self._prefetched = self._micro_batches(self._read())

    def state_dict(self) -> dict:
        """The position after the last batch returned by ``next_batch()`` (a prefetched batch is not consumed)."""
        epoch, shard, pos = self._state_before_prefetch or (self.epoch, self.shard, self.pos)
        return {"epoch": epoch, "shard": shard, "pos": pos, "num_shards": len(self.paths),
                "span": self.span, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        for key, mine in (("num_shards", len(self.paths)), ("span", self.span), ("seed", self.seed)):
            if state[key] != mine:
                raise ValueError(f"cannot resume the data position: the checkpoint's {key} is {state[key]}, "
                                 f"this run's is {mine} (changed data.dir, train.batch_size, model.block_size "
                                 f"or train.seed?)")
        self.epoch, self.shard, self.pos = state["epoch"], state["shard"], state["pos"]
        self._prefetched, self._state_before_prefetch = None, None


class ValidationSet:
    """The first ``num_tokens`` tokens of the val split as ``num_tokens // seq_len`` fixed sequences.

    Rank ``r`` evaluates sequences ``r, r+W, r+2W, ...``; summing losses and counts over ranks gives
    the same mean at any world size.
    """

    def __init__(self, shard_paths: list[Path], *, seq_len: int, num_tokens: int, vocab_size: int | None = None,
                 check_tokens: bool = True):
        if not shard_paths:
            raise ValueError("no validation shards found (expected files named *_val_*.bin)")
        self.num_sequences = num_tokens // seq_len
        if self.num_sequences == 0:
            raise ValueError(f"train.eval_tokens ({num_tokens}) is smaller than one sequence ({seq_len} tokens)")
        need = self.num_sequences * seq_len + 1
        parts, have = [], 0
        for path in shard_paths:
            tokens = open_shard(path, vocab_size=vocab_size, check_tokens=check_tokens)
            part = np.asarray(tokens[: need - have])
            if vocab_size is not None and part.size and int(part.max()) >= vocab_size:  # guarded whatever the scan said
                at = int(np.argmax(part >= vocab_size))
                raise token_error(path, int(part[at]), at, vocab_size)
            parts.append(part.astype(np.int64))
            have += len(parts[-1])
            if have == need:
                break
        if have < need:
            raise ValueError(f"the val split ({', '.join(str(p) for p in shard_paths)}) holds {have} tokens, fewer "
                             f"than train.eval_tokens + 1 = {need}; lower train.eval_tokens")
        self.tokens = torch.from_numpy(np.concatenate(parts))
        self.seq_len = seq_len

    def batches(self, rank: int, world_size: int, micro_batch_size: int, pad: bool = False):
        """Yield this rank's ``(inputs, targets)`` batches of at most ``micro_batch_size`` sequences; with ``pad``
        the last one is filled up to ``micro_batch_size`` rows of token 0 with ignored targets (-1), so every
        batch has one shape (a compiled model meets no new shape), and every rank yields the same number of
        batches (a rank short of sequences yields wholly ignored ones): a sharded (fsdp/hsdp) forward is a
        collective, so every rank must run as many."""
        mine = list(range(rank, self.num_sequences, world_size))
        t = self.seq_len
        most = len(range(0, self.num_sequences, world_size))  # rank 0 holds the most sequences
        count = most if pad else len(mine)
        for i in range(0, count, micro_batch_size):
            if not mine[i:i + micro_batch_size]:
                yield torch.zeros(micro_batch_size, t, dtype=torch.long), torch.full((micro_batch_size, t), -1)
                continue
            rows = torch.tensor(mine[i:i + micro_batch_size])
            index = rows[:, None] * t + torch.arange(t + 1)[None, :]
            window = self.tokens[index]
            x, y = window[:, :-1].contiguous(), window[:, 1:].contiguous()  # one layout for every batch
            if pad and len(rows) < micro_batch_size:
                missing = micro_batch_size - len(rows)
                x = torch.cat([x, x.new_zeros(missing, t)])
                y = torch.cat([y, y.new_full((missing, t), -1)])
            yield x, y


def resolve_shard_dir(data_dir: str) -> Path:
    """The shard directory of ``data.dir``; ``'embedded'`` prepares the shipped corpus on first use."""
    if data_dir == "embedded":
        from data.corpus import ensure_embedded_shards
        return Path(ensure_embedded_shards())
    path = Path(data_dir)
    if not path.is_dir():
        raise ValueError(f"data.dir {data_dir!r} is not a directory; prepare shards with `python -m data.fineweb` "
                         f"or use data.dir='embedded'")
    return path


def split_paths(directory: Path, split: str) -> list[Path]:
    paths = list_shards(directory, split)
    if not paths:
        raise ValueError(f"data.dir {str(directory)!r} has no {split} shards (files named *_{split}_*.bin)")
    return paths
