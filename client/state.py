"""The batch's state file: an append-only JSON-lines journal in the output folder.

Every line is one event about one job, written and flushed before the action it
announces (``submitted`` goes to disk before the POST), so a killed client leaves a file
that says exactly what may be running where. Events:

- ``{"event": "submitted", "job", "fingerprint", "prompt_id", "server", "attempt", "time"}``
- ``{"event": "lost", "job", "prompt_id", "server", "reason", "time"}``
- ``{"event": "done", "job", "fingerprint", "prompt_id", "server", "images": [...], "time"}``
- ``{"event": "failed", "job", "fingerprint", "prompt_id", "server", "reason", "time"}``
- ``{"event": "record", ...}``: a job's whole folded record, written when the file is compacted.

Loading folds the events into one `JobRecord` per job; a torn last line (a kill in the
middle of a write) is ignored. On open the file is compacted (rewritten atomically).
Opening takes the folder's lock (`folder_lock`), so one folder has one writer at a time.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .folder_lock import FolderLock

log = logging.getLogger(__name__)

STATE_FILE_NAME = "queue-state.jsonl"


@dataclass
class JobRecord:
    """What the journal says about one job. `status`: submitted, done or failed."""

    job: str
    fingerprint: str = ""
    status: str = "submitted"
    prompt_id: str | None = None
    server: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    reason: str | None = None


class StateFile:
    """The journal at `folder/queue-state.jsonl`, with the folded `records` by job key."""

    def __init__(self, folder: str | Path):
        """Open (creating the folder if needed), lock, load and compact the journal.

        Raises:
            ValueError: `folder` is a file, another run holds it (`FolderBusy`), or the journal
                is damaged before its last line; the message names the path.
        """
        folder = Path(folder)
        self.path = folder / STATE_FILE_NAME
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"output folder {folder} is a file; give a folder")
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = FolderLock(folder)
        try:
            self.records: dict[str, JobRecord] = self._load()
            self._compact()
            self._file = open(self.path, "a", encoding="utf-8")
        except BaseException:
            self._lock.release()
            raise

    def close(self) -> None:
        self._file.close()
        self._lock.release()

    def submitted(self, job: str, fingerprint: str, prompt_id: str, server: str) -> int:
        """Record an attempt before its POST; returns the attempt number (from 1)."""
        record = self.records.setdefault(job, JobRecord(job))
        attempt = len(record.attempts) + 1
        self._write({"event": "submitted", "job": job, "fingerprint": fingerprint, "prompt_id": prompt_id,
                     "server": server, "attempt": attempt})
        return attempt

    def lost(self, job: str, prompt_id: str, server: str, reason: str) -> None:
        self._write({"event": "lost", "job": job, "prompt_id": prompt_id, "server": server, "reason": reason})

    def done(self, job: str, fingerprint: str, prompt_id: str, server: str, images: list[str]) -> None:
        self._write({"event": "done", "job": job, "fingerprint": fingerprint, "prompt_id": prompt_id,
                     "server": server, "images": images})

    def failed(self, job: str, fingerprint: str, reason: str, prompt_id: str | None = None, server: str | None = None) -> None:
        self._write({"event": "failed", "job": job, "fingerprint": fingerprint, "prompt_id": prompt_id,
                     "server": server, "reason": reason})

    def _write(self, event: dict[str, Any]) -> None:
        event["time"] = round(time.time(), 3)
        _fold(self.records, event)
        self._file.write(json.dumps(event) + "\n")
        self._file.flush()

    def _load(self) -> dict[str, JobRecord]:
        records: dict[str, JobRecord] = {}
        if not self.path.exists():
            return records
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise ValueError(f"{self.path} is not a state file (not UTF-8 text: {error.reason}); "
                             f"move it away to start the batch afresh") from None
        for number, line in enumerate(lines, 1):
            try:
                _fold(records, json.loads(line))
            except (ValueError, KeyError, TypeError) as error:
                if number == len(lines):
                    log.warning("%s: ignoring a torn last line (%s)", self.path, error)
                else:
                    raise ValueError(f"{self.path} line {number} is not a state event ({error}); "
                                     f"fix or remove the file to start the batch afresh") from error
        return records

    def _compact(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as out:
                for record in self.records.values():
                    out.write(json.dumps({"event": "record", **asdict(record)}) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        finally:
            temporary.unlink(missing_ok=True)


def _fold(records: dict[str, JobRecord], event: dict[str, Any]) -> None:
    kind, job = event["event"], event["job"]
    if kind == "record":
        records[job] = JobRecord(**{k: v for k, v in event.items() if k != "event"})
        return
    record = records.setdefault(job, JobRecord(job))
    if kind == "submitted":
        record.attempts.append({"prompt_id": event["prompt_id"], "server": event["server"], "time": event["time"]})
        record.status, record.fingerprint, record.reason = "submitted", event["fingerprint"], None
    elif kind == "lost":
        record.attempts[-1]["lost"] = event["reason"]
    elif kind in ("done", "failed"):
        record.status, record.reason = kind, event.get("reason")
        record.fingerprint = event.get("fingerprint") or record.fingerprint
        record.images = event.get("images", [])
    else:
        raise ValueError(f"unknown event {kind!r}")
    record.prompt_id = event.get("prompt_id") or record.prompt_id
    record.server = event.get("server") or record.server
