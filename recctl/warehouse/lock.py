"""One writer at a time: an advisory ``flock`` on ``<warehouse>.lock``.

The kernel drops the lock when the holder exits, even on ``kill -9``, so a crashed job never leaves a
stale lock behind. The file holds the holder's pid, command and start time so that the next job can
say who it is waiting for; a killed holder leaves that record behind, so ``live_holder`` believes it
only while the flock is actually held. Readers never lock this file.
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

from recctl.errors import LockHeldError, WarehouseError


def lock_path_for(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def read_holder(lock_path: Path) -> dict[str, Any] | None:
    """What the lock file says about its holder, or None when empty or unreadable."""
    try:
        text = lock_path.read_text(encoding="utf-8").strip()
        return dict(json.loads(text)) if text else None
    except (OSError, ValueError):
        return None


def _flock_held(lock_path: Path) -> bool | None:
    """Whether any process holds a ``flock`` on ``lock_path``, from Linux's ``/proc/locks`` (a query: it
    takes no lock, so it never makes a starting writer fail); None where that table does not exist.

    Matched on the inode number alone (the device numbers of overlay file systems differ between
    ``stat`` and the table): a match on another file with the same inode only keeps a stale record.
    """
    try:
        inode = os.stat(lock_path).st_ino
        table = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 15980 fe:00:2146656 0 EOF" (blocked waiters have "->" after the number)
        if "FLOCK" not in fields or "->" in fields:  # "->": a process waiting for the lock, not holding it
            continue
        at = fields.index("FLOCK") + 4
        if at < len(fields) and fields[at].rsplit(":", 1)[-1] == str(inode):
            return True
    return False


def _pid_running(holder: dict[str, Any]) -> bool | None:
    """Whether the holder's pid runs, when it ran on this host; None when that cannot be known."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or holder.get("host") != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def holder_state(lock_path: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(live holder, stale record)``: the lock file's record is live while its flock is held (and its pid
    runs, on this host); a record left by a killed holder is returned as stale. Both None: no writer."""
    holder = read_holder(lock_path)
    if not holder:
        return None, None
    held = _flock_held(lock_path)
    running = _pid_running(holder)
    if held is False or running is False:
        return None, holder
    return holder, None


def live_holder(lock_path: Path) -> dict[str, Any] | None:
    return holder_state(lock_path)[0]


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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # a read-only mount, a folder we may not write, a file in the way
            raise WarehouseError(
                f"cannot open the writer lock file {self.path}: {exc.strerror or exc}",
                hint="writers need a writable folder for the warehouse and its .lock file; readers do not",
            ) from exc
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
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError as exc:  # a full disk: the holder record cannot be written, nor anything else
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise WarehouseError(
                f"cannot write the writer lock file {self.path}: {exc.strerror or exc}",
                hint="free space on that file system (nothing was written to the warehouse)",
            ) from exc
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
