"""One writer at a time: an advisory ``flock`` on ``<warehouse>.lock``.

The kernel drops the lock when the holder exits, even on ``kill -9``, so a crashed job never leaves a
stale lock behind. The file holds the holder's pid, command and start time so that the next job can
say who it is waiting for. Readers never touch this file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from recctl.errors import LockHeldError


def lock_path_for(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def read_holder(lock_path: Path) -> dict[str, Any] | None:
    """What the lock file says about its holder, or None when empty or unreadable."""
    try:
        text = lock_path.read_text(encoding="utf-8").strip()
        return dict(json.loads(text)) if text else None
    except (OSError, ValueError):
        return None


def describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process"
    return f"pid {holder.get('pid')} ({holder.get('command', '?')}) since {holder.get('started_at', '?')}"


class WarehouseLock:
    def __init__(self, db_path: Path, command: str) -> None:
        self.path = lock_path_for(db_path)
        self.command = command
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        delay = 0.05
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    holder = describe_holder(read_holder(self.path))
                    waited = f" after waiting {wait:g}s" if wait else ""
                    raise LockHeldError(
                        f"the warehouse is locked by {holder}{waited}",
                        hint="retry later, or pass --wait SECONDS to wait for it",
                    ) from None
                time.sleep(min(delay, max(deadline - time.monotonic(), 0.01)))
                delay = min(delay * 2, 1.0)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> WarehouseLock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
