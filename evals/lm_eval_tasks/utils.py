"""Data of the hellaswag_small task (hellaswag_small.yaml): a HellaSwag-format jsonl, `path` or the repository's
tests/evals/data/hellaswag_small.jsonl, as a `datasets` validation split with integer labels."""

import json
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[2] / "tests" / "evals" / "data" / "hellaswag_small.jsonl"


def load(path=None, **_):
    import datasets

    rows = []
    for line in Path(path or DEFAULT).read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            rows.append({"ctx": record["ctx"], "endings": list(record["endings"]), "label": int(record["label"])})
    return datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)})
