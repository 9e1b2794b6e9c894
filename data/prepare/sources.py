"""Documents from the Hugging Face hub or from local files, all through ``datasets``.

A source is either a hub dataset id (``HuggingFaceFW/fineweb``) or a local path: a parquet,
jsonl/json or plain-text file, a directory of such files, or a directory written by
``Dataset.save_to_disk``. Every kind becomes a ``datasets`` iterable dataset, read in batches
of texts; ``datasets`` is imported only here, lazily, because it is slow to import.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
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
    return path.is_dir() and (
        (path / "dataset_info.json").exists()
        or (path / "state.json").exists()
        or (path / "dataset_dict.json").exists()
    )


def _open_local(spec: SourceSpec):
    import datasets

    path = Path(spec.source).expanduser()
    if not path.exists():
        raise PrepareError(f"cannot read local source {path}: no such file or directory")
    if _is_saved_dataset(path):
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as exc:  # datasets raises several types for a bad directory
            raise PrepareError(f"cannot read saved dataset {path}: {exc}") from exc
        if isinstance(loaded, datasets.DatasetDict):
            if spec.split not in loaded:
                raise PrepareError(
                    f"saved dataset {path} has no split {spec.split!r}; splits: {', '.join(loaded)}"
                )
            loaded = loaded[spec.split]
        return loaded.to_iterable_dataset()
    builder, files = _local_files(path)
    kwargs = {"sample_by": spec.text_sample_by} if builder == "text" else {}
    try:
        return datasets.load_dataset(builder, data_files=files, split="train", streaming=True, **kwargs)
    except Exception as exc:
        raise PrepareError(f"cannot read {path} as {builder}: {exc}") from exc


NO_NETWORK_HINT = (
    "cannot reach the Hugging Face Hub for {source}: prepare the shards on a machine with network "
    "access and copy the output directory, or pass a local source (--source PATH to parquet, jsonl, "
    "text files or a saved dataset)"
)


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


def _open_hub(spec: SourceSpec):
    import datasets

    try:
        dataset = datasets.load_dataset(spec.source, name=spec.name, split=spec.split, streaming=spec.streaming)
        # A downloaded (cached) dataset is read through the same iterable interface as a stream.
        return dataset if spec.streaming else dataset.to_iterable_dataset()
    except Exception as exc:
        if _looks_like_network_failure(exc):
            raise PrepareError(NO_NETWORK_HINT.format(source=spec.source)) from exc
        raise PrepareError(f"cannot load {spec.source} (config {spec.name}, split {spec.split}): {exc}") from exc


def open_dataset(spec: SourceSpec):
    """The source as a ``datasets`` dataset (iterable when streaming)."""
    if spec.text_sample_by not in TEXT_SAMPLE_BY:
        raise PrepareError(f"text_sample_by must be one of {TEXT_SAMPLE_BY}, got {spec.text_sample_by!r}")
    return _open_local(spec) if is_local(spec.source) else _open_hub(spec)


def open_text_batches(spec: SourceSpec, batch_size: int, skip_documents: int = 0) -> Iterator[list[str]]:
    """Lists of at most ``batch_size`` texts, in source order, after the first ``skip_documents``.

    The source is opened and its first batch read before this returns, so a missing file, an
    unreadable file, a missing text column or an unreachable hub raise ``PrepareError`` here,
    before any output is written.
    """
    dataset = open_dataset(spec)
    columns = getattr(dataset, "column_names", None)
    if columns is not None and spec.text_column not in columns:
        raise PrepareError(_missing_column_message(spec, columns))
    if columns is not None and len(columns) > 1:
        dataset = dataset.select_columns([spec.text_column])
    if skip_documents:
        dataset = dataset.skip(skip_documents)
    batches = _iter_checked_batches(spec, dataset, batch_size, skip_documents)
    first = next(batches, None)
    return batches if first is None else itertools.chain([first], batches)


def _iter_checked_batches(spec: SourceSpec, dataset, batch_size: int, index: int) -> Iterator[list[str]]:
    column = spec.text_column
    try:
        for batch in dataset.iter(batch_size=batch_size):
            if column not in batch:
                raise PrepareError(_missing_column_message(spec, list(batch)))
            texts = batch[column]
            for offset, text in enumerate(texts):
                if not isinstance(text, str):
                    raise PrepareError(
                        f"{spec.source}: document {index + offset} has a {type(text).__name__} "
                        f"in column {column!r}, expected a string"
                    )
            index += len(texts)
            yield texts
    except PrepareError:
        raise
    except Exception as exc:
        if not is_local(spec.source) and _looks_like_network_failure(exc):
            raise PrepareError(NO_NETWORK_HINT.format(source=spec.source)) from exc
        raise PrepareError(f"cannot read {spec.source} after document {index}: {exc}") from exc


def _missing_column_message(spec: SourceSpec, columns) -> str:
    return (
        f"{spec.source} has no column {spec.text_column!r}; its columns are "
        f"{', '.join(map(str, columns)) or '(none)'}; pass --text-column NAME"
    )
