"""The distributed train loader and the validation set: rank slices, determinism, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.loader import TrainLoader, ValidationSet
from data.shards import ShardError, write_shard


@pytest.fixture
def shards(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, n in enumerate([700, 1000, 530, 40]):  # the last one is smaller than a global batch
        paths.append(write_shard(tmp_path / f"t_train_{i:06d}.bin", rng.integers(0, 1000, n)))
    val = write_shard(tmp_path / "t_val_000000.bin", np.arange(300) % 1000)
    return paths, val


def make(paths, **kw):
    args = dict(seq_len=8, batch_size=8, micro_batch_size=2, seed=3, vocab_size=1000)
    args.update(kw)
    with pytest.warns(UserWarning, match="fewer than one global batch"):
        return TrainLoader(paths, **args)


def global_batch(loaders):
    """Reassemble the global batch from every rank's micro-batches, in row order."""
    rows = {}
    world = len(loaders)
    for rank, loader in enumerate(loaders):
        for k, (x, y) in enumerate(loader.next_batch()):
            b = x.shape[0]
            first = (k * world + rank) * b
            for j in range(b):
                rows[first + j] = (x[j], y[j])
    xs = torch.stack([rows[i][0] for i in sorted(rows)])
    ys = torch.stack([rows[i][1] for i in sorted(rows)])
    return xs, ys


def test_targets_are_inputs_shifted_and_contiguous(shards):
    paths, _ = shards
    (x, y), = make(paths, micro_batch_size=8).next_batch()
    assert x.shape == (8, 8) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(x.flatten()[1:], y.flatten()[:-1])


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_partition_the_same_global_batch(shards, world):
    paths, _ = shards
    single = make(paths)
    ranks = [make(paths, rank=r, world_size=world)  # micro-batch 2: accumulation 2 (W=2) or 1 (W=4)
             for r in range(world)]
    for _ in range(12):  # crosses shard boundaries and an epoch
        ref = global_batch([single])
        got = global_batch(ranks)
        assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])
    assert len({str(r.state_dict()) for r in ranks} | {str(single.state_dict())}) == 1


def test_state_dict_restores_exact_position_and_seed_changes_order(shards):
    paths, _ = shards
    a = make(paths)
    for _ in range(5):
        a.next_batch()
    b = make(paths)
    b.load_state_dict(a.state_dict())
    for _ in range(10):
        assert all(torch.equal(p[0], q[0]) for p, q in zip(a.next_batch(), b.next_batch()))
    first = [make(paths, seed=s).next_batch()[0][0] for s in range(6)]
    assert any(not torch.equal(first[0], f) for f in first[1:])


def test_resume_refuses_a_different_batch_geometry(shards):
    paths, _ = shards
    state = make(paths).state_dict()
    with pytest.raises(ValueError, match="span"):
        make(paths, batch_size=16).load_state_dict(state)


def test_bad_geometry_and_no_usable_shard(shards):
    paths, _ = shards
    with pytest.raises(ValueError, match="multiple of train.micro_batch_size"):
        TrainLoader(paths, seq_len=8, batch_size=8, micro_batch_size=3)
    with pytest.raises(ValueError, match="no train shard holds one global batch"):
        with pytest.warns(UserWarning):
            TrainLoader(paths[-1:], seq_len=8, batch_size=8, micro_batch_size=2)


def test_token_ids_are_checked_against_vocab(shards):
    paths, _ = shards
    loader = make(paths, vocab_size=10)
    with pytest.raises(ValueError, match=r"t_train_0000"):
        loader.next_batch()


def test_validation_set_is_split_across_ranks_without_overlap(shards):
    _, val = shards
    vs = ValidationSet([val], seq_len=10, num_tokens=95, vocab_size=1000)
    assert vs.num_sequences == 9
    seen = []
    for rank in range(2):
        for x, y in vs.batches(rank, 2, micro_batch_size=2):
            assert torch.equal(x[:, 1:], y[:, :-1])
            seen += [int(r[0]) for r in x]
    assert sorted(seen) == [10 * i for i in range(9)]
    with pytest.raises(ValueError, match="fewer than train.eval_tokens"):
        ValidationSet([val], seq_len=10, num_tokens=400)


def test_every_batch_is_guarded_where_it_is_read(tmp_path):
    """Issue 20: whatever a scan or its cache said, a token id >= vocab_size in a batch stops the read with one error
    naming the shard and the offset, before anything reaches an embedding (no IndexError / device assert)."""
    tokens = np.arange(4000, dtype=np.uint16) % 1000
    tokens[2500] = 1500
    path = tmp_path / "t_train_000000.bin"
    write_shard(path, tokens)
    loader = TrainLoader([path], seq_len=16, batch_size=8, micro_batch_size=4, shuffle=False, check_tokens=False,
                         vocab_size=1000)
    for _ in range(2500 // 128):  # the batches before the bad token read fine
        loader.next_batch()
    with pytest.raises(ShardError, match=rf"{path.name}: token id 1500 at token offset 2500 \(byte 6024\) is >= "
                                         r"model.vocab_size 1000"):
        loader.next_batch()
    with pytest.raises(ShardError, match="token offset 2500"):
        ValidationSet([path], seq_len=16, num_tokens=2600, vocab_size=1000, check_tokens=False)
