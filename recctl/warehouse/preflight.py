"""Checks before DuckDB opens the warehouse path, for the cases DuckDB gets wrong or explains badly.

- A path under a regular file (``data.csv/wh.duckdb``): a one-line error instead of ``FileExistsError``.
- A file that is not a DuckDB database: DuckDB 2 opens an existing ``.csv``, ``.tsv``, ``.json`` or
  ``.parquet`` file as an *in-memory* database with a view over it, so an ingest into it "succeeds" and
  is lost on exit; a SQLite file makes it download an extension. Every DuckDB file carries ``DUCK`` at
  byte 8 (after the header checksum), so anything else is refused before DuckDB sees it.
- A write-ahead log damaged at its start: DuckDB treats a WAL whose first entry does not deserialize as a
  torn write and silently skips all of it, losing every transaction committed since the last checkpoint
  (garbage in a later entry fails its checksum, and DuckDB raises; ``classify`` reports that one).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from recctl.errors import WarehouseError
from recctl.warehouse.integrity import WAL_HINT, wal_path_for

DUCKDB_MAGIC = b"DUCK"
#: Seconds a file shorter than the header may take to get one before the writer lock: DuckDB writes it when
#: it creates the file, so only a warehouse being created by another writer is that short for long.
CREATING_GRACE = 3.0
_MAGIC_AT = 8


def _file_ancestor(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a folder."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _looks_like(head: bytes) -> str:
    if head.startswith(b"PAR1"):
        return "a Parquet file"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip file"
    if head.startswith(b"SQLite format 3"):
        return "a SQLite database"
    if head.startswith((b"PK\x03\x04", b"BZh", b"\x28\xb5\x2f\xfd")):
        return "an archive or compressed file"
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head[:64]):
        return "a text file (CSV / JSON?)"
    return "not a DuckDB file"


def check_location(path: Path, *, create: bool, being_created: bool = False) -> None:
    """Refuse a warehouse path that cannot be a DuckDB warehouse (exit 2, one line); with ``create``,
    make its folder. ``being_created``: a file shorter than DuckDB's header is given ``CREATING_GRACE``
    seconds to grow one (checked before the writer lock, it may be a new warehouse another writer is
    creating under the lock) before it is refused."""
    try:
        _check_location(path, create=create, being_created=being_created)
    except OSError as exc:  # a folder on the way we may not search
        raise WarehouseError(f"cannot use warehouse {path}: {exc.strerror or exc}") from exc


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(64)
    except OSError as exc:
        raise WarehouseError(f"cannot read warehouse {path}: {exc.strerror or exc}") from exc


def _check_location(path: Path, *, create: bool, being_created: bool = False) -> None:
    blocker = _file_ancestor(path)
    if blocker is not None:
        raise WarehouseError(
            f"cannot use warehouse {path}: {blocker} is a file, not a folder",
            hint="pass --warehouse FOLDER/NAME.duckdb with a folder (existing or new)",
        )
    if path.is_dir():
        raise WarehouseError(
            f"cannot use warehouse {path}: it is a folder", hint="pass --warehouse FOLDER/NAME.duckdb"
        )
    if path.exists() and not path.is_file():  # a FIFO or a device: reading its header would block
        raise WarehouseError(f"not a DuckDB warehouse: {path} (not a regular file)")
    if path.exists():
        head = _head(path)
        deadline = time.monotonic() + CREATING_GRACE
        while being_created and len(head) < _MAGIC_AT + len(DUCKDB_MAGIC) and time.monotonic() < deadline:
            time.sleep(0.05)
            head = _head(path)
        if head[_MAGIC_AT : _MAGIC_AT + len(DUCKDB_MAGIC)] != DUCKDB_MAGIC:
            kind = "an empty file" if not head else _looks_like(head)
            raise WarehouseError(
                f"not a DuckDB warehouse: {path} ({kind})",
                hint="pass --warehouse FILE.duckdb (a DuckDB file, or a new path); data files are loaded "
                "with `recctl ingest`. If this was a warehouse, its header is damaged: restore it from a "
                "backup, or move it away and re-ingest the raw files",
            )
    elif create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WarehouseError(
                f"cannot create the warehouse folder {path.parent}: {exc.strerror or exc}"
            ) from exc


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """An unsigned LEB128 integer at ``pos`` (DuckDB's binary serializer); IndexError when cut off."""
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def wal_header_end(head: bytes) -> int | None:
    """Where the version entry DuckDB writes first in every WAL (without size and checksum) ends, or None
    when ``head`` does not start with one: field 100 = WAL_VERSION (98), 101 = version, optional 102 =
    database id, optional 103 = checkpoint iteration, then the object terminator 0xFFFF."""
    try:
        if head[:3] != b"d\x00b" or head[3:5] != b"e\x00":
            return None
        version, pos = _varint(head, 5)
        if version not in (2, 3):
            return None
        if head[pos : pos + 2] == b"f\x00":
            count, pos = _varint(head, pos + 2)
            for _ in range(count):
                _, pos = _varint(head, pos)
        if head[pos : pos + 2] == b"g\x00":
            _, pos = _varint(head, pos + 2)
        return pos + 2 if head[pos : pos + 2] == b"\xff\xff" else None
    except IndexError:
        return None


def wal_header_ok(head: bytes) -> bool:
    return wal_header_end(head) is not None


#: No WAL entry is near this size (an entry is one chunk of rows, a row-group pointer, a catalog change);
#: a size field beyond it is garbage, which DuckDB would take for a torn write and skip the rest at.
MAX_WAL_ENTRY = 2**32


def _garbage_size_at(wal: Path, start: int) -> int | None:
    """The offset of an entry whose size field is garbage, walking the ``[size][checksum][entry]``
    framing of a version-2 WAL from ``start``; None when every entry fits (a short last entry is a commit
    torn by a crash, which DuckDB rightly drops)."""
    end = wal.stat().st_size
    with wal.open("rb") as fh:
        pos = start
        while pos + 16 <= end:
            fh.seek(pos)
            size = int.from_bytes(fh.read(8), "little")
            if size > MAX_WAL_ENTRY:
                return pos
            pos += 16 + size
    return None


def check_wal(path: Path) -> None:
    """Refuse (exit 2) a non-empty WAL next to ``path`` that DuckDB would skip entirely."""
    wal = wal_path_for(path)
    try:
        with wal.open("rb") as fh:
            head = fh.read(256)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise WarehouseError(
            f"cannot read the warehouse's write-ahead log {wal}: {exc.strerror or exc}"
        ) from exc
    if not head:
        return
    size = os.path.getsize(wal)
    header_end = wal_header_end(head)
    if header_end is None:
        where = "at its start, and DuckDB would skip all of it"
    else:
        version = head[5]
        bad = _garbage_size_at(wal, header_end) if version == 2 else None
        if bad is None:
            return
        where = f"at byte {bad} (an entry size no entry has), and DuckDB would skip everything from there"
    raise WarehouseError(
        f"the warehouse's write-ahead log cannot be replayed ({path}): {wal} ({size} bytes) is damaged {where}",
        hint=WAL_HINT.format(wal=wal),
    )
