"""Reading the user's input files (workflow, prompts) with errors that name the file and the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of `path` (a leading byte-order mark is dropped).

    Raises:
        ValueError: missing, a folder, unreadable, or not UTF-8; names `what`, the file and
            (for encoding errors) the line and column.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{what} {path} is a folder; give a file") from None
    except OSError as error:
        raise ValueError(f"{what} {path}: cannot be read ({error.strerror or error})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise ValueError(f"{what} {path} line {line} column {column}: byte 0x{raw[error.start]:02x} is not UTF-8; "
                         f"save the file as UTF-8") from None


def read_json(path: str | Path, what: str) -> Any:
    """The JSON value in `path`.

    Raises:
        ValueError: as `read_text`, or not JSON (naming line and column).
    """
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} {path} line {error.lineno} column {error.colno}: not valid JSON ({error.msg})") from None
