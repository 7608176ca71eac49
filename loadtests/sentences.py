"""Real-looking sentences to send: the packaged list, or a validation CSV of real labeled data."""

from __future__ import annotations

import csv
import os
from pathlib import Path

SENTENCES_FILE = Path(__file__).resolve().parent / "sentences.txt"


def load_sentences(path: str | os.PathLike[str] | None = None) -> list[str]:
    """Non-empty lines of a .txt file (default: loadtests/sentences.txt), or the text column of a .csv."""
    source = Path(path) if path else SENTENCES_FILE
    if not source.is_file():
        raise FileNotFoundError(f"sentences file {source} does not exist")
    if source.suffix == ".csv":
        with open(source, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "text" not in reader.fieldnames:
                raise ValueError(f"{source}: expected a 'text' column, found {reader.fieldnames}")
            lines = [(row.get("text") or "").strip() for row in reader]
    else:
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
    texts = [line for line in lines if line]
    if not texts:
        raise ValueError(f"sentences file {source} holds no non-empty line")
    return texts


def shared_validation_csv() -> Path:
    """sentiment/validation.csv in the data folder training reads: $LABELWISE_DATA_DIR, else ../shared/data
    beside the checkout."""
    root = os.environ.get("LABELWISE_DATA_DIR")
    base = Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data"
    return base / "sentiment" / "validation.csv"


def real_texts_file() -> Path:
    """The shared sentiment validation CSV (real tweets) when present, else the packaged sentences."""
    path = shared_validation_csv()
    return path if path.is_file() else SENTENCES_FILE
