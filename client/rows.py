"""Read a prompts file: plain text (one prompt a line), CSV, or JSONL.

Every row is a dict of column -> value. A text line is ``{"prompt": line}``; CSV cells are
strings, converted to the input's type later; JSONL values keep their JSON types. Columns
are described in `overrides`.

Empty cells: an empty (or all-blank) CSV cell and a JSONL ``null`` mean "keep the
workflow's value" (or, for ``seed``, the --seed plan; for ``name``, the row number). A
JSONL ``""`` is a value: an empty text, and an invalid row for a number input. A row with
nothing but empty cells is skipped with a warning naming its line; so are blank lines.
"""

from __future__ import annotations

import collections
import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import read_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    """One row of a prompts file: `index` counts from 1, `line` is the line it starts on."""

    index: int
    line: int
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"row {self.index} (line {self.line})"


PROMPTS_SUFFIXES = (".txt", ".csv", ".jsonl", ".ndjson")


def read_rows(path: str | Path) -> list[Row]:
    """The rows of the prompts file at `path`, chosen by extension (.csv, .jsonl/.ndjson, .txt).

    Text: blank lines and lines starting with ``#`` are skipped.

    Raises:
        ValueError: another suffix (a ``.json`` list would otherwise be read line by line as
            text), a missing or non-UTF-8 file, a JSONL line that is not a JSON object, a CSV
            without a header, with repeated column names or with more cells than columns; names
            the file and the line.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in PROMPTS_SUFFIXES:
        raise ValueError(f"prompts file {path}: {f'suffix {suffix!r}' if suffix else 'no suffix'}; use .txt (one prompt "
                         f"a line), .csv (a header line) or .jsonl (one JSON object a line)")
    text = read_text(path, "prompts file")
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
    names = [name.strip() for name in reader.fieldnames]
    repeated = sorted(name for name, count in collections.Counter(names).items() if count > 1)
    if repeated or "" in names:
        problem = f"repeats the columns {repeated}" if repeated else "has a column without a name"
        raise ValueError(f"{path} line 1: the header {problem}; every column needs its own name")
    rows = []
    for record in reader:
        if None in record:
            raise ValueError(f"{path} line {reader.line_num}: {len(names) + len(record[None])} cells but "
                             f"{len(names)} columns; quote cells that contain commas")
        values = {key.strip(): value for key, value in record.items() if value is not None and value.strip()}
        _append(rows, values, reader.line_num, path)
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
        _append(rows, {key: value for key, value in values.items() if value is not None}, number, path)
    return rows


def _append(rows: list[Row], values: dict[str, Any], line: int, path: Path) -> None:
    if values:
        rows.append(Row(len(rows) + 1, line, values))
    else:
        log.warning("%s line %d: every cell is empty; the row is skipped", path, line)
