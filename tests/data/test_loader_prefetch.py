"""Prefetching and device transfer of the train loader: same batches, exact state, int64 on the device."""

from __future__ import annotations

import torch

from tests.data.test_loader import make, shards  # noqa: F401  (fixture)


def batches(loader, n, prefetch):
    out = []
    for _ in range(n):
        out.append([(x.clone(), y.clone()) for x, y in loader.next_batch()])
        if prefetch:
            loader.prefetch()
    return out


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v)
                                    for ba, bb in zip(a, b) for (x, y), (u, v) in zip(ba, bb))


def test_prefetch_gives_the_same_stream(shards):  # noqa: F811
    paths, _ = shards
    plain = batches(make(paths), 12, prefetch=False)  # several epochs over the shards
    assert same(batches(make(paths), 12, prefetch=True), plain)
    assert all(x.dtype == torch.int64 and x.shape == (2, 8) for b in plain for x, _ in b)


def test_state_dict_excludes_the_prefetched_batch(shards):  # noqa: F811
    paths, _ = shards
    loader = make(paths)
    batches(loader, 3, prefetch=False)
    state = loader.state_dict()
    loader.prefetch()
    assert loader.state_dict() == state  # the read-ahead batch is not consumed yet
    expected = batches(loader, 2, prefetch=True)
    resumed = make(paths)
    resumed.load_state_dict(state)
    assert same(batches(resumed, 2, prefetch=False), expected)
    loader.load_state_dict(state)  # dropping a prefetched batch on load
    assert same(batches(loader, 2, prefetch=False), expected)


def test_device_batches_are_int64_converted_on_the_device(shards):  # noqa: F811
    paths, _ = shards
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert same(batches(make(paths, device=device), 3, prefetch=True),
                [[(x.to(device), y.to(device)) for x, y in b] for b in batches(make(paths), 3, prefetch=False)])
