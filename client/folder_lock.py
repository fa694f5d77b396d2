"""One writer per output folder: an OS file lock on ``<folder>/queue.lock``, held for a whole run.

The operating system releases the lock when its process ends, however it ends, so a
killed run never leaves a stale lock behind. The file holds the owner's pid and start
time, for the message the next run shows.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

LOCK_FILE_NAME = "queue.lock"

if os.name == "nt":
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False


class FolderBusy(ValueError):
    """Another run holds the output folder's lock."""


class FolderLock:
    """Holds `folder`'s lock from construction until `release()`.

    Raises:
        FolderBusy: another process (or another run in this one) holds it; names its pid.
    """

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_FILE_NAME
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(self._fd):
            owner = self._owner()
            os.close(self._fd)
            raise FolderBusy(f"{folder} is in use by another queue run{owner}; wait for it to finish "
                             f"(it resumes the same batch) or give another --out folder")
        os.ftruncate(self._fd, 0)
        os.write(self._fd, json.dumps({"pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())

    def _owner(self) -> str:
        try:
            owner = json.loads(self.path.read_text() or "{}")
            return f" (pid {owner['pid']}, since {owner['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    def release(self) -> None:
        """Unlock (closing the descriptor releases the OS lock); idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
