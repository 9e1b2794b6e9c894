"""data.prepare: shard contents, split, rollover, sources, resume and workers (local fixtures only)."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from data import shards
from data.prepare import PrepareConfig, PrepareError, SourceSpec, prepare
from data.prepare import pipeline
from data.tokenizer import EOT

from conftest import expected_stream, write_jsonl, write_parquet

VAL, SHARD = 2000, 3000


def run(source, out, **overrides):
    options = dict(shard_tokens=SHARD, val_tokens=VAL, workers=0, batch_documents=16, progress=False)
    spec_options = {k: overrides.pop(k) for k in ("text_column", "text_sample_by") if k in overrides}
    options.update(overrides)
    config = PrepareConfig(source=SourceSpec(source=str(source), **spec_options), out_dir=out, prefix="t", **options)
    return prepare(config)


def read_independently(out):
    """All shards in index order, read with struct and np.fromfile: [(name, header, tokens)]."""
    found = []
    for path in sorted(out.glob("t_*_*.bin"), key=lambda p: int(p.stem.rsplit("_", 1)[1])):
        with open(path, "rb") as handle:
            header = struct.unpack("<256i", handle.read(1024))
        found.append((path.name, header, np.fromfile(path, dtype="<u2", offset=1024)))
    return found


def shard_bytes(out):
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.bin"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, jsonl_source):
    out = tmp_path_factory.mktemp("reference")
    run(jsonl_source, out)
    return out


def test_shards_hold_eot_then_tokens_of_each_document_in_order(reference, documents):
    found = read_independently(reference)
    for _, header, tokens in found:
        assert header[:3] == (20240520, 1, len(tokens)) and not any(header[3:])
    stream = np.concatenate([tokens for _, _, tokens in found])
    expected = expected_stream(documents)
    np.testing.assert_array_equal(stream, expected)
    assert int(np.count_nonzero(stream == EOT)) == len(documents)


def test_first_shard_is_val_then_train_shards_roll_over_at_size(reference, documents):
    found = read_independently(reference)
    total = len(expected_stream(documents))
    n_train = math.ceil((total - VAL) / SHARD)
    assert [name for name, _, _ in found] == ["t_val_000000.bin"] + [f"t_train_{i:06d}.bin" for i in range(1, n_train + 1)]
    sizes = [len(tokens) for _, _, tokens in found]
    assert sizes == [VAL] + [SHARD] * (n_train - 1) + [total - VAL - SHARD * (n_train - 1)]
    assert [p.name for p in shards.list_shards(reference, "val")] == ["t_val_000000.bin"]
    assert len(shards.list_shards(reference, "train")) == n_train


def test_manifest_and_progress_describe_the_output(reference, documents):
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["format"] == "llm.c-bin" and manifest["tokenizer"]["eot"] == EOT
    assert manifest["prepare"]["shard_tokens"] == SHARD and manifest["prepare"]["val_tokens"] == VAL
    progress = json.loads((reference / "progress.json").read_text())
    assert progress["finished"] and progress["documents_done"] == len(documents)


def test_parquet_source_gives_identical_shards(tmp_path, documents, reference):
    source = write_parquet(tmp_path / "docs.parquet", documents)
    run(source, tmp_path / "out")
    assert shard_bytes(tmp_path / "out") == shard_bytes(reference)


def test_directory_of_files_is_read_in_name_order(tmp_path, documents, reference):
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(src / "part-0.jsonl", documents[:50])
    write_jsonl(src / "part-1.jsonl", documents[50:])
    run(src, tmp_path / "out")
    assert shard_bytes(tmp_path / "out") == shard_bytes(reference)


def test_saved_dataset_directory(tmp_path, documents, reference):
    import datasets

    datasets.Dataset.from_dict({"text": documents}).save_to_disk(str(tmp_path / "saved"))
    run(tmp_path / "saved", tmp_path / "out")
    assert shard_bytes(tmp_path / "out") == shard_bytes(reference)


def test_plain_text_files_one_document_per_file(tmp_path):
    docs = ["First file.\nTwo lines.", "Second file, naïve café.", "Third\n\nwith a blank line."]
    src = tmp_path / "txt"
    src.mkdir()
    for i, doc in enumerate(docs):
        (src / f"{i:02d}.txt").write_text(doc, encoding="utf-8")
    run(src, tmp_path / "out", val_tokens=5)
    stream = np.concatenate([t for _, _, t in read_independently(tmp_path / "out")])
    np.testing.assert_array_equal(stream, expected_stream(docs))


def test_max_tokens_prepares_a_prefix(tmp_path, jsonl_source, documents):
    summary = run(jsonl_source, tmp_path / "out", max_tokens=VAL + SHARD + 123)
    found = read_independently(tmp_path / "out")
    stream = np.concatenate([t for _, _, t in found])
    np.testing.assert_array_equal(stream, expected_stream(documents)[: VAL + SHARD + 123])
    assert [len(t) for _, _, t in found] == [VAL, SHARD, 123]
    assert summary.tokens == {"val": VAL, "train": SHARD + 123}


def test_small_source_leaving_no_train_shard_is_refused_with_a_val_tokens_hint(tmp_path):
    source = write_jsonl(tmp_path / "tiny.jsonl", ["just a few words"])  # 5 tokens with the EOT
    with pytest.raises(PrepareError, match=r"gave 5 tokens in all.*no train shard.*--val-tokens 1 \(a tenth"):
        run(source, tmp_path / "out")
    assert list((tmp_path / "out").glob("*.bin")) == [] and not (tmp_path / "out" / "manifest.json").exists()
    summary = run(source, tmp_path / "out", val_tokens=1)  # the hint works as given
    assert summary.shards == {"val": 1, "train": 1} and summary.tokens == {"val": 1, "train": 4}
    with pytest.raises(PrepareError, match=r"--max-tokens \(100\) is not above --val-tokens \(1,000\)"):
        run(source, tmp_path / "other", max_tokens=100, val_tokens=1000)  # refused before anything is read


def test_rerun_of_a_finished_directory_changes_nothing(tmp_path, jsonl_source):
    run(jsonl_source, tmp_path / "out")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    summary = run(jsonl_source, tmp_path / "out")
    assert summary.already_complete and summary.tokens_this_run == 0
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == before


class Interrupted(Exception):
    pass


def _fail_on_call(monkeypatch, owner, name, call):
    original = getattr(owner, name)
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise Interrupted(f"simulated kill in {name}")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


@pytest.mark.parametrize(
    "where, call",
    [
        ("before the third shard is renamed", 3),
        ("after the third shard is renamed, before progress is saved", 3),
    ],
)
def test_resume_after_interruption_is_byte_identical(tmp_path, monkeypatch, jsonl_source, reference, where, call):
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        if where.startswith("before"):
            _fail_on_call(patch, shards, "write_shard", call)
        else:
            _fail_on_call(patch, pipeline, "save_progress", call)
        with pytest.raises(Interrupted):
            run(jsonl_source, out, batch_documents=7)
    (out / ".t_train_000003.bin.abc.tmp").write_bytes(b"partial")  # what a SIGKILL mid-write leaves
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*.bin")}
    assert set(kept) >= {"t_val_000000.bin", "t_train_000001.bin"}

    summary = run(jsonl_source, out, batch_documents=5)
    assert summary.resumed
    assert shard_bytes(out) == shard_bytes(reference)
    assert not list(out.glob("*.tmp"))
    for name in ("t_val_000000.bin", "t_train_000001.bin"):
        assert (out / name).stat().st_mtime_ns == kept[name], "finished shards must be kept, not rewritten"


def test_resume_rewrites_a_finished_shard_that_fails_verification(tmp_path, monkeypatch, jsonl_source, reference):
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _fail_on_call(patch, shards, "write_shard", 4)
        with pytest.raises(Interrupted):
            run(jsonl_source, out)
    damaged = out / "t_train_000002.bin"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    summary = run(jsonl_source, out)
    assert any("t_train_000002.bin" in w and "truncated" in w for w in summary.warnings)
    assert shard_bytes(out) == shard_bytes(reference)


@pytest.mark.slow
def test_one_and_two_worker_processes_give_identical_shards(tmp_path, jsonl_source, reference):
    for workers in (1, 2):
        run(jsonl_source, tmp_path / f"w{workers}", workers=workers, batch_documents=9)
        assert shard_bytes(tmp_path / f"w{workers}") == shard_bytes(reference)


def test_custom_text_column(tmp_path, documents, reference):
    source = write_jsonl(tmp_path / "content.jsonl", documents, column="content")
    run(source, tmp_path / "out", text_column="content")
    assert shard_bytes(tmp_path / "out") == shard_bytes(reference)


def _record_opened_files(monkeypatch):
    """Record the data_files of every datasets.load_dataset call."""
    import datasets

    original, opened = datasets.load_dataset, []

    def recording(*args, **kwargs):
        opened.append([str(f) for f in kwargs.get("data_files") or []])
        return original(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", recording)
    return opened


def _parquet_parts(directory, documents, n_parts=4):
    directory.mkdir(parents=True)
    step = math.ceil(len(documents) / n_parts)
    for part in range(n_parts):
        write_parquet(directory / f"{part:03d}_00000.parquet", documents[part * step : (part + 1) * step])
    return directory


def test_resume_passes_over_whole_parquet_files_by_row_count(tmp_path, monkeypatch, documents, reference):
    source = _parquet_parts(tmp_path / "parts", documents)
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _fail_on_call(patch, shards, "write_shard", 6)  # the 6th shard starts past the first file
        with pytest.raises(Interrupted):
            run(source, out)
    progress = json.loads((out / "progress.json").read_text())
    assert progress["position"]["document"] > 30
    with monkeypatch.context() as patch:
        opened = _record_opened_files(patch)
        run(source, out)
    assert opened and not any(name.endswith("000_00000.parquet") for name in opened[0])
    assert shard_bytes(out) == shard_bytes(reference)


def test_resume_of_a_saved_dataset_reads_by_index(tmp_path, monkeypatch, documents, reference):
    import datasets

    datasets.Dataset.from_dict({"text": documents}).save_to_disk(str(tmp_path / "saved"))
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _fail_on_call(patch, pipeline, "save_progress", 4)
        with pytest.raises(Interrupted):
            run(tmp_path / "saved", out)
    run(tmp_path / "saved", out)
    assert shard_bytes(out) == shard_bytes(reference)


README_WITH_CONFIGS = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/*/*
- config_name: sample-10BT
  data_files:
  - split: train
    path: sample/10BT/*
---
"""


def test_hub_path_streams_the_config_data_files(tmp_path, monkeypatch, documents, reference):
    """The hub code path on a local dataset repository laid out like HuggingFaceFW/fineweb."""
    from data.prepare import sources

    repo = tmp_path / "fineweb"
    _parquet_parts(repo / "sample" / "10BT", documents)
    (repo / "data" / "CC-MAIN-X").mkdir(parents=True)
    write_parquet(repo / "data" / "CC-MAIN-X" / "000.parquet", ["not part of the sample"])
    (repo / "README.md").write_text(README_WITH_CONFIGS)
    monkeypatch.setattr(sources, "is_local", lambda source: False)
    monkeypatch.setattr(sources, "hub_unreachable", lambda *a, **k: None)  # the "hub" is this directory
    files = sources.repository_data_files(str(repo), "sample-10BT", "train")
    assert files.builder == "parquet" and [f.rsplit("/", 1)[1] for f in files.files] == [
        f"{i:03d}_00000.parquet" for i in range(4)]

    config = PrepareConfig(source=SourceSpec(source=str(repo), name="sample-10BT"), out_dir=tmp_path / "out",
                           prefix="t", shard_tokens=SHARD, val_tokens=VAL, workers=0, progress=False)
    with monkeypatch.context() as patch:
        _fail_on_call(patch, shards, "write_shard", 5)
        with pytest.raises(Interrupted):
            prepare(config)
    prepare(config)
    assert shard_bytes(tmp_path / "out") == shard_bytes(reference)
