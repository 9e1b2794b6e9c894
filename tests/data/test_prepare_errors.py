"""Clear errors of data.prepare: bad sources, missing column, foreign output directories, no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data import shards
from data.prepare import PrepareConfig, PrepareError, SourceSpec, prepare

from conftest import write_jsonl

REPO_ROOT = Path(__file__).resolve().parents[2]


def run(source, out, **options):
    spec_options = {k: options.pop(k) for k in ("text_column",) if k in options}
    config = PrepareConfig(source=SourceSpec(source=str(source), **spec_options), out_dir=out, prefix="t",
                           shard_tokens=1000, val_tokens=1, workers=0, progress=False, **options)
    return prepare(config)


def test_missing_text_column_names_the_columns_and_the_option(tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", ["a", "b"], column="content")
    with pytest.raises(PrepareError) as info:
        run(source, tmp_path / "out")
    message = str(info.value)
    assert "'text'" in message and "content" in message and "--text-column" in message
    written = [p.name for p in (tmp_path / "out").iterdir() if p.name != ".prepare.lock"]
    assert written == [], "nothing is written for a bad source"


def test_missing_file(tmp_path):
    with pytest.raises(PrepareError, match="no such file"):
        run(tmp_path / "absent.jsonl", tmp_path / "out")


def test_unreadable_parquet_names_the_file(tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"this is not parquet at all")
    with pytest.raises(PrepareError) as info:
        run(bad, tmp_path / "out")
    assert "broken.parquet" in str(info.value)


def test_unknown_file_type(tmp_path):
    odd = tmp_path / "docs.xml"
    odd.write_text("<doc/>")
    with pytest.raises(PrepareError, match="unknown file type"):
        run(odd, tmp_path / "out")


def test_directory_without_readable_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match="no readable files"):
        run(tmp_path / "empty", tmp_path / "out")


def test_non_string_document_names_its_index(tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text('{"text": "fine"}\n{"text": "fine"}\n{"text": null}\n')
    with pytest.raises(PrepareError, match=r"document 2 has a NoneType"):
        run(source, tmp_path / "out")


def test_output_with_foreign_shards_is_refused(tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", ["hello world"])
    out = tmp_path / "out"
    shards.write_shard(out / "fineweb_train_000001.bin", [1, 2, 3])
    with pytest.raises(PrepareError, match="without a manifest.json"):
        run(source, out)


@pytest.mark.parametrize(
    "key, value, message",
    [("tokenizer", {"name": "cl100k_base", "eot": 100257}, "another tokenizer"),
     ("format", "numpy-npy", "another format"),
     ("dtype", "uint32", "another format")],
)
def test_output_of_another_tokenizer_or_format_is_refused(tmp_path, key, value, message):
    source = write_jsonl(tmp_path / "docs.jsonl", ["hello world"])
    out = tmp_path / "out"
    run(source, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest[key] = value
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PrepareError, match=message):
        run(source, out)


def test_other_options_on_an_existing_directory_are_refused(tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", ["hello world"])
    run(source, tmp_path / "out")
    with pytest.raises(PrepareError, match=r"other options \(max_tokens: None there, 7 now\)"):
        run(source, tmp_path / "out", max_tokens=7)


@pytest.mark.parametrize("field, value", [("shard_tokens", 0), ("val_tokens", 0), ("max_tokens", -1), ("workers", -2)])
def test_bad_numbers_are_refused(tmp_path, field, value):
    config = PrepareConfig(source=SourceSpec(source="x.jsonl"), out_dir=tmp_path, **{field: value})
    with pytest.raises(PrepareError, match=field):
        prepare(config)


def test_no_network_gives_one_line_pointing_to_offline_preparation(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "data.fineweb", "--out", str(tmp_path / "out"), "--no-progress"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "cannot reach the Hugging Face Hub for HuggingFaceFW/fineweb" in errors[0]
    assert "pass a local source" in errors[0]
    assert "Traceback" not in result.stderr


def test_a_directory_being_written_by_another_run_is_refused(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    source = write_jsonl(tmp_path / "docs.jsonl", ["hello world"])
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".prepare.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(PrepareError, match="another preparation is writing"):
            run(source, out)
    run(source, out)  # free again


def test_unresolvable_hub_host_fails_at_once(tmp_path, monkeypatch):
    import socket

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    config = PrepareConfig(source=SourceSpec(source="HuggingFaceFW/fineweb", name="sample-10BT"),
                           out_dir=tmp_path / "out", workers=0, progress=False)
    with pytest.raises(PrepareError, match="cannot reach the Hugging Face Hub for HuggingFaceFW/fineweb"):
        prepare(config)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_empty_jsonl_says_why(tmp_path):
    source = tmp_path / "empty.jsonl"
    source.write_bytes(b"")
    with pytest.raises(PrepareError) as info:
        run(source, tmp_path / "out")
    message = str(info.value)
    assert "empty.jsonl is empty (0 bytes)" in message and not message.rstrip().endswith(":")
