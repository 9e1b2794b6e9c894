"""Documents from the Hugging Face hub or from local files, all through ``datasets``.

A source is either a hub dataset id (``HuggingFaceFW/fineweb``) or a local path: a parquet,
jsonl/json or plain-text file, a directory of such files, or a directory written by
``Dataset.save_to_disk``. Files (local ones, or the data files of a hub config) are streamed
with ``datasets``' packaged builders; a saved or downloaded dataset is read by index. Either way
the texts come in batches, in a fixed order, from any document index: a resumed run starts
reading at the recorded document, skipping whole parquet files by their row counts and indexing
saved datasets directly, so it does not re-read the source from the beginning.
``datasets`` is imported only here, lazily, because it is slow to import.
"""

from __future__ import annotations

import itertools
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

# File extension -> datasets packaged builder. Compressed variants are read by the builders.
LOCAL_BUILDERS = {
    ".parquet": "parquet",
    ".jsonl": "json",
    ".json": "json",
    ".jsonl.gz": "json",
    ".json.gz": "json",
    ".txt": "text",
    ".txt.gz": "text",
}
TEXT_SAMPLE_BY = ("document", "paragraph", "line")


class PrepareError(RuntimeError):
    """A preparation problem the user can fix; the message says what and where."""


@dataclass(frozen=True)
class SourceSpec:
    """Where documents come from."""

    source: str
    name: Optional[str] = None  # hub config, e.g. "sample-10BT"
    split: str = "train"
    text_column: str = "text"
    streaming: bool = True
    text_sample_by: str = "document"  # plain-text files: one document per file, paragraph or line


def _builder_for(path: Path) -> Optional[str]:
    name = path.name.lower()
    for suffix, builder in sorted(LOCAL_BUILDERS.items(), key=lambda item: -len(item[0])):
        if name.endswith(suffix):
            return builder
    return None


def is_local(source: str) -> bool:
    """A source is local when it names an existing path or looks like one (not ``owner/name``)."""
    path = Path(source)
    if path.exists() or source.startswith((".", "/", "~")) or _builder_for(path) is not None:
        return True
    return False


def _local_files(path: Path) -> tuple[str, list[str]]:
    """The builder and the sorted files of a local file or directory of files."""
    if path.is_file():
        builder = _builder_for(path)
        if builder is None:
            raise PrepareError(
                f"cannot read {path}: unknown file type; expected one of {', '.join(sorted(LOCAL_BUILDERS))}"
            )
        return builder, [str(path)]
    files = sorted(p for p in path.rglob("*") if p.is_file() and _builder_for(p) is not None)
    if not files:
        raise PrepareError(
            f"no readable files in {path}: expected files ending in {', '.join(sorted(LOCAL_BUILDERS))} "
            "or a directory written by datasets' save_to_disk"
        )
    builders = {_builder_for(p) for p in files}
    if len(builders) > 1:
        raise PrepareError(f"{path} mixes file types ({', '.join(sorted(builders))}); pass one kind")
    return builders.pop(), [str(p) for p in files]


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).exists() for name in ("dataset_info.json", "state.json", "dataset_dict.json")
    )


@dataclass
class DataFiles:
    """Files read in order by one ``datasets`` packaged builder (parquet, json, text)."""

    builder: str
    files: list
    kwargs: dict = field(default_factory=dict)


def _open_local(spec: SourceSpec):
    """A saved ``datasets.Dataset``, or the ``DataFiles`` of a local file or directory."""
    import datasets

    path = Path(spec.source).expanduser()
    if not path.exists():
        raise PrepareError(f"cannot read local source {path}: no such file or directory")
    if _is_saved_dataset(path):
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as exc:  # datasets raises several types for a bad directory
            raise PrepareError(f"cannot read saved dataset {path}: {exc}") from exc
        return _pick_split(loaded, spec, str(path))
    builder, files = _local_files(path)
    return DataFiles(builder, files, {"sample_by": spec.text_sample_by} if builder == "text" else {})


def _pick_split(loaded, spec: SourceSpec, where: str):
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        if spec.split not in loaded:
            raise PrepareError(f"{where} has no split {spec.split!r}; splits: {', '.join(loaded)}")
        return loaded[spec.split]
    return loaded


NO_NETWORK_HINT = (
    "cannot reach the Hugging Face Hub for {source}: prepare the shards on a machine with network "
    "access and copy the output directory, or pass a local source (--source PATH to parquet, jsonl, "
    "text files or a saved dataset)"
)
STREAMABLE_BUILDERS = ("parquet", "json", "text", "csv", "arrow")


def _looks_like_network_failure(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in _exception_chain(exc)}
    text = " ".join(str(e) for e in _exception_chain(exc)).lower()
    network_names = {
        "ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "MaxRetryError",
        "NameResolutionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectError",
    }
    network_words = ("offline", "connection", "resolve", "network", "timed out", "unreachable")
    return bool(names & network_names) or any(word in text for word in network_words)


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def repository_data_files(source: str, name: Optional[str], split: str) -> Optional[DataFiles]:
    """The data files of a dataset repository's config and split (hub id or local repository
    directory with a README.md ``configs`` section), or None when it is not file-based."""
    import datasets

    builder = datasets.load_dataset_builder(source, name=name)
    data_files = builder.config.data_files or {}
    if builder.name not in STREAMABLE_BUILDERS or split not in data_files:
        return None
    return DataFiles(builder.name, [str(f) for f in data_files[split]])


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_host_unresolvable() -> bool:
    """True when, without a proxy, the hub's host name does not resolve: fail at once instead of
    after the hub client's retries."""
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return False
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    if not host:
        return False
    try:
        socket.getaddrinfo(host, 443)
    except socket.gaierror:
        return True
    return False


def hub_offline_mode() -> bool:
    """HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set: only the local cache is used (no probe, no retries)."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_unreachable(timeout_s: float = 5.0) -> Optional[str]:
    """Why the Hugging Face Hub cannot be reached, or None when it answers: the host does not resolve (without a
    proxy), or one HEAD request (through the environment's proxy, if any) gets no HTTP answer within ``timeout_s``.
    Checked before ``datasets`` is asked, whose client retries for half a minute or more when offline."""
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    if hub_host_unresolvable():
        return f"{urlparse_host(constants.ENDPOINT)} does not resolve"
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return None  # it answered (even 4xx/5xx: the datasets client will say what is wrong)
    except (urllib.error.URLError, OSError) as err:
        return f"no answer from {constants.ENDPOINT} within {timeout_s:g} s ({getattr(err, 'reason', err)})"
    return None


def urlparse_host(url: str) -> str:
    from urllib.parse import urlparse

    return urlparse(url).hostname or url


def _open_hub(spec: SourceSpec):
    """A downloaded ``Dataset`` (``streaming=False``), the config's ``DataFiles`` to stream, or,
    for a dataset that is not plain files, its ``IterableDataset``."""
    import datasets

    if not hub_offline_mode() and hub_unreachable() is not None:
        raise PrepareError(NO_NETWORK_HINT.format(source=spec.source))
    try:
        if not spec.streaming:
            return _pick_split(datasets.load_dataset(spec.source, name=spec.name), spec, spec.source)
        files = repository_data_files(spec.source, spec.name, spec.split)
        if files is not None:
            return files
        return datasets.load_dataset(spec.source, name=spec.name, split=spec.split, streaming=True)
    except PrepareError:
        raise
    except Exception as exc:
        if _looks_like_network_failure(exc):
            raise PrepareError(NO_NETWORK_HINT.format(source=spec.source)) from exc
        raise PrepareError(f"cannot load {spec.source} (config {spec.name}, split {spec.split}): {exc}") from exc


def open_source(spec: SourceSpec):
    """The source as a ``datasets.Dataset``, ``DataFiles`` or ``datasets.IterableDataset``."""
    if spec.text_sample_by not in TEXT_SAMPLE_BY:
        raise PrepareError(f"text_sample_by must be one of {TEXT_SAMPLE_BY}, got {spec.text_sample_by!r}")
    return _open_local(spec) if is_local(spec.source) else _open_hub(spec)


def parquet_row_counts(files: list) -> Iterator[int]:
    """Rows of each parquet file, from its footer (local paths or remote URLs)."""
    import pyarrow.parquet as pq
    from datasets.utils.file_utils import xopen

    for name in files:
        with xopen(name, "rb") as handle:
            yield pq.ParquetFile(handle).metadata.num_rows


def _reason(exc: Exception, files: list) -> str:
    """Why a source could not be read: the exception's text, or a description when it has none."""
    empty = [str(f) for f in files if isinstance(f, (str, os.PathLike)) and os.path.isfile(f) and
             os.path.getsize(f) == 0]
    if empty:
        return f"{empty[0]} is empty (0 bytes): there are no documents in it"
    return str(exc) or f"{type(exc).__name__} (no message) while reading {files[0] if files else 'the source'}"


def _stream_files(source: DataFiles, skip_documents: int, where: str):
    """An ``IterableDataset`` over ``source`` from document ``skip_documents``: whole parquet
    files before it are passed over by their row counts, the rest is skipped by reading."""
    import datasets

    files = list(source.files)
    if skip_documents and source.builder == "parquet":
        try:
            for rows in parquet_row_counts(source.files):
                if skip_documents < rows:
                    break
                skip_documents -= rows
                files.pop(0)
        except Exception as exc:
            raise PrepareError(f"cannot read the parquet footer of {files[0]} in {where}: {exc}") from exc
    if not files:
        return None
    try:
        dataset = datasets.load_dataset(source.builder, data_files=files, split="train", streaming=True,
                                        **source.kwargs)
    except Exception as exc:
        raise PrepareError(f"cannot read {where} as {source.builder}: {_reason(exc, files)}") from exc
    return dataset.skip(skip_documents) if skip_documents else dataset


def open_text_batches(spec: SourceSpec, batch_size: int, skip_documents: int = 0) -> Iterator[list[str]]:
    """Lists of at most ``batch_size`` texts, in source order, after the first ``skip_documents``.

    The source is opened and its first batch read before this returns, so a missing file, an
    unreadable file, a missing text column or an unreachable hub raise ``PrepareError`` here,
    before any output is written.
    """
    import datasets

    opened = open_source(spec)
    if isinstance(opened, datasets.Dataset):
        _check_columns(spec, opened.column_names)
        batches = _indexed_batches(spec, opened.select_columns([spec.text_column]), batch_size, skip_documents)
    else:
        if isinstance(opened, DataFiles):
            opened = _stream_files(opened, skip_documents, spec.source)
        elif skip_documents:
            opened = opened.skip(skip_documents)
        if opened is None:
            return iter(())
        columns = opened.column_names
        if columns is not None:
            _check_columns(spec, columns)
            if len(columns) > 1:
                opened = opened.select_columns([spec.text_column])
        batches = _streamed_batches(spec, opened, batch_size, skip_documents)
    first = next(batches, None)
    return batches if first is None else itertools.chain([first], batches)


def _indexed_batches(spec: SourceSpec, dataset, batch_size: int, start: int) -> Iterator[list[str]]:
    for index in range(start, len(dataset), batch_size):
        yield _checked_texts(spec, dataset[index : index + batch_size][spec.text_column], index)


def _streamed_batches(spec: SourceSpec, dataset, batch_size: int, index: int) -> Iterator[list[str]]:
    try:
        for batch in dataset.iter(batch_size=batch_size):
            if spec.text_column not in batch:
                raise PrepareError(_missing_column_message(spec, list(batch)))
            texts = _checked_texts(spec, batch[spec.text_column], index)
            index += len(texts)
            yield texts
    except PrepareError:
        raise
    except Exception as exc:
        if not is_local(spec.source) and _looks_like_network_failure(exc):
            raise PrepareError(NO_NETWORK_HINT.format(source=spec.source)) from exc
        raise PrepareError(f"cannot read {spec.source} after document {index}: {exc}") from exc


def _checked_texts(spec: SourceSpec, texts: list, index: int) -> list[str]:
    for offset, text in enumerate(texts):
        if not isinstance(text, str):
            raise PrepareError(
                f"{spec.source}: document {index + offset} has a {type(text).__name__} "
                f"in column {spec.text_column!r}, expected a string"
            )
    return texts


def _check_columns(spec: SourceSpec, columns) -> None:
    if spec.text_column not in columns:
        raise PrepareError(_missing_column_message(spec, columns))


def _missing_column_message(spec: SourceSpec, columns) -> str:
    return (
        f"{spec.source} has no column {spec.text_column!r}; its columns are "
        f"{', '.join(map(str, columns)) or '(none)'}; pass --text-column NAME"
    )
