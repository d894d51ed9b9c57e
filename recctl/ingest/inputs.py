"""An input file made ready for DuckDB: a regular file, hashed, and gzip verified end to end.

DuckDB's own gzip reader does not check the stream's CRC and length: a ``.csv.gz`` with bytes flipped
mid-stream loaded the rows before the damage, turned the garbage into rejects and lost the rest without
a word. So a compressed input is decompressed here, in one streaming pass that also hashes the file
(memory stays flat: 1 MiB chunks), into a temporary plain file that DuckDB then reads. Python's gzip
module checks every member's CRC-32 and length; a failed check, a truncated stream or data that is not
gzip refuses the whole file before anything is loaded. The plain copy also lets DuckDB read the CSV
with all its threads, which more than pays for the pass (see the report of issue 13: 3 M rows, 43 MB
gz: 14.7 s read as gz, 1.1 s to verify and decompress + 9.1 s to load the plain copy).

Files are recognized as gzip by their name (``.gz``, ``.gzip``) or by the gzip magic bytes.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import re
import shutil
import stat
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from recctl.errors import DataError

CHUNK = 1 << 20
GZIP_SUFFIXES = (".gz", ".gzip")
_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Input:
    path: Path  # the file as given (what messages, the manifest and rejects name)
    data_path: Path  # what DuckDB reads: the file itself, or its verified plain copy
    sha256: str  # of the file as given (compressed bytes for a .gz)
    compressed: bool
    cr_free: bool = False  # data_path holds no CR byte at all (so an LF file has no foreign line break)


@dataclass(frozen=True)
class Scan:
    """One pass over a file as given: its content hash, whether it holds a CR byte, and its stat stamp."""

    sha256: str
    cr_free: bool
    stamp: tuple[int, int, int]  # size, mtime (ns), inode: changed when the file is written or replaced


def stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    kinds = {
        stat.S_ISFIFO: "a FIFO", stat.S_ISDIR: "a directory", stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
    }  # fmt: skip
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def check_regular(path: Path) -> None:
    """A regular file (symlinks followed), else DataError: a FIFO would block the reader forever."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    kind = _kind(mode)
    if kind is not None:
        raise DataError(f"{path} is {kind}, not a regular file")


def is_gzip_name(path: Path) -> bool:
    return path.name.lower().endswith(GZIP_SUFFIXES)


def plain_name(path: Path) -> str:
    """The file name without its compression suffix (``events.csv.gz`` → ``events.csv``)."""
    name = path.name
    for suffix in GZIP_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


class _Hashing:
    """A read-only file wrapper that hashes every byte read through it."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        b = self._f.read(n)
        self.sha.update(b)
        return b

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def _gunzip_error(path: Path, exc: BaseException) -> DataError:
    if isinstance(exc, EOFError):
        why = "the stream is truncated (it ends before the end-of-stream marker)"
    elif isinstance(exc, gzip.BadGzipFile):
        why = str(exc) or "bad gzip data"
        if "CRC" in why or "length" in why:
            why = f"the integrity check failed ({why}): the file is damaged"
    else:  # zlib.error
        why = f"the compressed data is damaged ({exc})"
    return DataError(f"{path}: corrupt gzip file: {why}; nothing was loaded from it")


def _gunzip(path: Path, hashing: _Hashing, plain: Path) -> bool:
    """Decompress through ``hashing`` into ``plain``, chunk by chunk, every member's CRC and length checked;
    returns whether the plain data holds no CR byte."""
    cr_free = True
    try:
        out = plain.open("wb")
    except OSError as exc:
        raise DataError(f"{path}: cannot decompress it to {plain.parent}: {exc.strerror or exc}") from exc
    with out, gzip.GzipFile(fileobj=hashing, mode="rb") as gz:  # type: ignore[call-overload]
        while True:
            try:
                chunk = gz.read(CHUNK)
            except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
                raise _gunzip_error(path, exc) from exc
            if not chunk:
                return cr_free
            cr_free = cr_free and chunk.find(b"\r") < 0
            try:
                out.write(chunk)
            except OSError as exc:
                raise DataError(
                    f"{path}: cannot decompress it to {plain.parent}: {exc.strerror or exc}",
                    hint="free space there or point TMPDIR at a larger disk",
                ) from exc


def _compressed(path: Path) -> bool:
    """gzip by its name or its magic bytes."""
    if is_gzip_name(path):
        return True
    try:
        with path.open("rb") as f:
            return f.read(2) == _MAGIC
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def prepared(path: Path, scan: Scan | None = None) -> Iterator[Input]:
    """``path`` checked, hashed and (when compressed) verified and decompressed to a temporary file that
    is removed afterwards. Raises DataError naming the file for anything unreadable.

    A plain file already scanned (``scan``) is not read again: its hash and CR check are the scan's (the
    caller compares the file's stamp after the load, which also covers a change while DuckDB read it)."""
    check_regular(path)
    if scan is not None and not _compressed(path):
        yield Input(path, path, scan.sha256, False, cr_free=scan.cr_free)
        return
    tmpdir: str | None = None
    try:
        try:
            with path.open("rb") as raw:
                compressed = is_gzip_name(path) or raw.read(2) == _MAGIC
                raw.seek(0)
                hashing = _Hashing(raw)
                data_path, cr_free = path, False
                if compressed:
                    try:
                        tmpdir = tempfile.mkdtemp(prefix="recctl-ingest-")
                    except OSError as exc:
                        raise DataError(
                            f"{path}: no temporary folder to decompress it in: {exc.strerror or exc}",
                            hint="point TMPDIR at a writable disk",
                        ) from exc
                    data_path = Path(tmpdir) / (plain_name(path) if is_gzip_name(path) else path.name)
                    cr_free = _gunzip(path, hashing, data_path)
                    hashing.drain()
                else:
                    cr_free = _hash_into(raw, hashing.sha)
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
        yield Input(path, data_path, hashing.sha.hexdigest(), compressed, cr_free=cr_free)
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _hash_into(f: BinaryIO, sha: hashlib._Hash) -> bool:
    """Feed the rest of ``f`` to ``sha``; returns whether none of it was a CR byte (memchr per chunk)."""
    buf = bytearray(CHUNK * 4)
    view = memoryview(buf)
    cr_free = True
    while n := f.readinto(buf):  # type: ignore[attr-defined]
        sha.update(view[:n])
        cr_free = cr_free and buf.find(b"\r", 0, n) < 0
    return cr_free


def scan_file(path: Path) -> Scan:
    """One read of ``path``: its sha256 as stored (the manifest's identity of a file), whether it holds a
    CR byte (an LF file without one needs no line-ending pass), and its stamp before the read."""
    with path.open("rb") as f:
        st = os.fstat(f.fileno())
        sha = hashlib.sha256()
        cr_free = _hash_into(f, sha)
    return Scan(sha.hexdigest(), cr_free, (st.st_size, st.st_mtime_ns, st.st_ino))


def file_sha256(path: Path) -> str:
    """The content hash of ``path`` as stored (the manifest's identity of a file)."""
    return scan_file(path).sha256


_FOREIGN_BREAKS = {  # per line ending of a file: the other line breaks (a regex over its bytes)
    "\n": re.compile(rb"\r"),
    "\r": re.compile(rb"\n"),
    "\r\n": re.compile(rb"\r(?!\n)|(?<!\r)\n"),
}


def _chunks(path: Path) -> Iterator[tuple[bytes, bool]]:
    """The file in large chunks, a trailing CR held back for the next one (it may start a CRLF);
    (chunk, last)."""
    carry = b""
    with path.open("rb") as f:
        while True:
            block = f.read(CHUNK * 4)
            chunk = carry + block
            if block and chunk.endswith(b"\r"):
                carry, chunk = chunk[-1:], chunk[:-1]
            else:
                carry = b""
            yield chunk, not block
            if not block:
                return


def foreign_line_break(path: Path, newline: str, quote: str) -> int | None:
    """The line (1-based, counted in ``newline`` endings) of the first line break of another style
    outside a quoted value, or None. DuckDB reads one line ending per file, the first line's: a CR row in
    an LF file runs two records into one. A first pass only searches for other line breaks (a file with
    one line ending is read once, at memchr speed); when there are some, a second pass tells quoted from
    unquoted ones by the parity of the quote characters before them (an escaped quote is a pair)."""
    pattern = _FOREIGN_BREAKS[newline]
    if not any(pattern.search(chunk) for chunk, _ in _chunks(path)):
        return None
    q, main = quote.encode(), newline.encode()
    quotes = lines = 0
    for chunk, _ in _chunks(path):
        pos = 0
        for m in pattern.finditer(chunk):
            if q:
                quotes += chunk.count(q, pos, m.start())
            lines += chunk.count(main, pos, m.start())
            pos = m.start()
            if not q or quotes % 2 == 0:
                return lines + 1
        if q:
            quotes += chunk.count(q, pos)
        lines += chunk.count(main, pos)
    return None
