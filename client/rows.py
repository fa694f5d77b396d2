"""Read a prompts file: plain text (one prompt a line), CSV, or JSONL.

Every row is a dict of column -> value. A text line is ``{"prompt": line}``; CSV cells are
strings (empty cells are left out) and are converted to the input's type later; JSONL
values keep their JSON types. Columns are described in `overrides`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    """One row of a prompts file: `index` counts from 1, `line` is the line it starts on."""

    index: int
    line: int
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"row {self.index} (line {self.line})"


def read_rows(path: str | Path) -> list[Row]:
    """The rows of the prompts file at `path`, chosen by extension (.csv, .jsonl/.ndjson, else text).

    Text: blank lines and lines starting with ``#`` are skipped.

    Raises:
        ValueError: a JSONL line that is not a JSON object, or a CSV without a header; names the line.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_rows(text, path)
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl_rows(text, path)
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)]
    kept = [(number, line) for number, line in lines if line and not line.startswith("#")]
    return [Row(index, number, {"prompt": line}) for index, (number, line) in enumerate(kept, 1)]


def _csv_rows(text: str, path: Path) -> list[Row]:
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames:
        raise ValueError(f"{path}: a CSV prompts file needs a header line (e.g. `prompt,seed,steps`)")
    rows = []
    for record in reader:
        values = {key.strip(): value for key, value in record.items() if key and value not in (None, "")}
        if values:
            rows.append(Row(len(rows) + 1, reader.line_num, values))
    return rows


def _jsonl_rows(text: str, path: Path) -> list[Row]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except ValueError as error:
            raise ValueError(f"{path} line {number}: not JSON ({error})") from error
        if not isinstance(values, dict):
            raise ValueError(f"{path} line {number}: expected a JSON object like {{\"prompt\": \"...\"}}")
        rows.append(Row(len(rows) + 1, number, values))
    return rows
