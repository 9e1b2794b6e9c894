"""The start-up shard check: token ids >= vocab in any shard, shards the manifest does not list, another
tokenizer; the scan is cached in the manifest by content digest (not size + mtime); directories without a manifest pass with a note."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from data import inspect, scan, shards
from data.corpus import ensure_embedded_shards


@pytest.fixture
def prepared(tmp_path):
    """A copy of the embedded corpus' shard directory (manifest + progress written by the preparation)."""
    out = tmp_path / "shards"
    shutil.copytree(ensure_embedded_shards(), out)
    return out


def test_prepared_directory_passes_and_caches_the_scan(prepared, monkeypatch):
    assert scan.check_directory(prepared, 50304, scan_tokens=True) == []
    cached = json.loads((prepared / "manifest.json").read_text())["token_scan"]
    assert set(cached) == {p.name for p in prepared.glob("*.bin")}
    assert all(0 < e["max_token"] < 50257 for e in cached.values())
    monkeypatch.setattr(scan, "max_token_id", lambda p: pytest.fail(f"re-read {p} despite the cache"))
    assert scan.check_directory(prepared, 50304, scan_tokens=True) == []


def test_a_shard_rewritten_with_the_same_size_and_mtime_is_scanned_again(prepared):
    """Issue 20: the cache is keyed by the content's SHA-256, so an in-place rewrite cannot pass on a stale entry."""
    assert scan.check_directory(prepared, 50304, scan_tokens=True) == []
    path = sorted(prepared.glob("*_train_*.bin"))[0]
    before = path.stat()
    tokens = np.array(shards.open_shard(path))
    tokens[7] = 60000
    shards.write_shard(path, tokens)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    with pytest.raises(ValueError, match=f"{path.name}: token id 60000 >= model.vocab_size 50304"):
        scan.check_directory(prepared, 50304, scan_tokens=True)


def test_token_id_above_vocab_in_a_later_shard_is_found_at_start_up(prepared):
    path = sorted(prepared.glob("*_train_*.bin"))[1]
    tokens = np.array(shards.open_shard(path))
    tokens[len(tokens) // 2] = 60000
    shards.write_shard(path, tokens)
    with pytest.raises(ValueError, match=f"{path.name}: token id 60000 >= model.vocab_size 50304"):
        scan.check_directory(prepared, 50304, scan_tokens=True)


def test_shards_the_manifest_does_not_list_are_refused(prepared):
    stray = prepared / "other_train_000001.bin"
    shards.write_shard(stray, np.arange(5000, dtype=np.uint16))
    with pytest.raises(ValueError, match="do not list .*other_train_000001.bin"):
        scan.check_directory(prepared, 50304, scan_tokens=False)
    lines, bad = inspect.validate_directory(prepared, 50257)
    assert bad == 1 and any("INVALID" in line and "other_train_000001.bin" in line for line in lines)


def test_another_tokenizer_in_the_manifest_is_refused(prepared):
    manifest = json.loads((prepared / "manifest.json").read_text())
    manifest["tokenizer"]["name"] = "cl100k_base"
    (prepared / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="tokenizer 'cl100k_base'"):
        scan.check_directory(prepared, 50304, scan_tokens=False)


def test_directory_without_manifest_is_accepted_with_one_note(tmp_path):
    shards.write_shard(tmp_path / "x_val_000000.bin", np.arange(100, dtype=np.uint16))
    shards.write_shard(tmp_path / "x_train_000001.bin", np.arange(100, dtype=np.uint16))
    notes = scan.check_directory(tmp_path, 50304, scan_tokens=True)
    assert len(notes) == 1 and "has no manifest.json" in notes[0]
    assert not (tmp_path / "manifest.json").exists()


def test_trainer_refuses_at_start_up_before_any_step(prepared, tmp_path, capsys):
    import train_gpt
    from tests.helpers import FAST, TINY
    path = sorted(prepared.glob("*_train_*.bin"))[-1]
    tokens = np.array(shards.open_shard(path))
    tokens[-1] = 50257  # the first padded row: a token the tokenizer cannot emit
    shards.write_shard(path, tokens)
    out = tmp_path / "run"
    assert train_gpt.main(["--config", TINY, *FAST, f"--data.dir={prepared}", f"--train.out_dir={out}"]) == 1
    assert f"{path.name}: token id 50257 >= model.tokenizer_vocab_size 50257" in capsys.readouterr().err
    assert not (out / "metrics.jsonl").exists()
