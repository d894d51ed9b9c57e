"""Model runs: ``runs/<run_id>/`` (resolved config, meta.json, models/…), and which one is promoted.

A run is written into a hidden staging folder (``runs/.tmp-<run_id>``, its owner process in
``owner.json``) and renamed into place only when complete, with ``manifest.json`` (the size and SHA-256
of every file, ``recctl.run_files``); promotion replaces ``runs/PROMOTED`` atomically. A failed or killed
training leaves the promoted run untouched; the staging folders of killed trains are removed by the next
train or ``runs list`` once their owner is gone (``sweep_staging``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recctl import run_files
from recctl.errors import NotTrainedError

PROMOTED = "PROMOTED"


def new_run_id() -> str:
    now = datetime.now(UTC)
    return f"{now:%Y%m%d-%H%M%S}{now.microsecond // 1000:03d}-{secrets.token_hex(2)}"  # sorts by time


def run_path(runs_dir: Path, run_id: str) -> Path:
    path = runs_dir / run_id
    if not (path / "meta.json").exists():
        if path.is_dir() and not run_id.startswith("."):
            raise NotTrainedError(f"run {run_id}: meta.json is missing (the run folder is incomplete)",
                                  hint=run_files.HINT)  # fmt: skip
        raise NotTrainedError(f"no run {run_id!r} in {runs_dir}", hint="`recctl runs list` shows the runs")
    return path


# ----------------------------------------------------------------------------------- staging folders

STAGING_PREFIX = ".tmp-"
STALE_AFTER_S = 48 * 3600.0  # a staging folder whose owner cannot be checked is removed after this


def staging_path(runs_dir: Path, run_id: str) -> Path:
    """``runs/.tmp-<run_id>``, with its owner (pid, host, start time) in ``owner.json`` so that a later
    train can tell a killed train's leftovers from a live train's folder (``sweep_staging``)."""
    path = runs_dir / f"{STAGING_PREFIX}{run_id}"
    path.mkdir(parents=True)
    write_json(path / run_files.OWNER, _owner())
    return path


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "proc_start": _proc_start(os.getpid()),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc), which tells a reused pid apart."""
    stat = _proc_stat(pid)
    return stat[19] if stat and len(stat) > 19 else None


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _alive(owner: dict[str, Any]) -> bool:
    """Whether the process that wrote ``owner`` (on this host) is still running."""
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc: the pid exists, trust it
    if stat[0] in ("Z", "X"):
        return False  # exited, not yet reaped
    started = owner.get("proc_start")
    return started is None or started == stat[19]


def stale_staging(runs_dir: Path, *, stale_after: float = STALE_AFTER_S) -> list[Path]:
    """The staging folders of trains that are no longer running: same host and the owner process is gone
    (or its pid now belongs to another process), else (other host, or no readable owner file) older than
    ``stale_after`` seconds. Never the folder of a live train."""
    if not runs_dir.is_dir():
        return []
    host, now = socket.gethostname(), time.time()
    out = []
    for path in sorted(runs_dir.glob(f"{STAGING_PREFIX}*")):
        if not path.is_dir():
            continue
        try:
            owner = json.loads((path / run_files.OWNER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            owner = None
        if isinstance(owner, dict) and owner.get("host") == host:
            if not _alive(owner):
                out.append(path)
            continue
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue  # its train just finished or discarded it
        if age > stale_after:
            out.append(path)
    return out


def sweep_staging(runs_dir: Path, *, stale_after: float = STALE_AFTER_S) -> list[str]:
    """Remove ``stale_staging`` folders; returns their names."""
    removed = []
    for path in stale_staging(runs_dir, stale_after=stale_after):
        discard(path)
        if not path.exists():
            removed.append(path.name)
    return removed


def finish(runs_dir: Path, staging: Path, run_id: str, meta: dict[str, Any]) -> Path:
    """Write the manifest and meta.json and move the complete run into place."""
    (staging / run_files.OWNER).unlink(missing_ok=True)
    run_files.write_manifest(staging)
    write_json(staging / "meta.json", meta)
    final = runs_dir / run_id
    os.replace(staging, final)
    return final


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------ runs and promotion


def promotable(runs_dir: Path, run_id: str) -> Path:
    """The run's folder when it can be promoted; a damaged run (``run_files.verify``: every file hashed)
    is refused."""
    path = run_path(runs_dir, run_id)
    read_meta(path)
    read_config(path)
    run_files.verify(path)
    return path


def promote(runs_dir: Path, run_id: str) -> None:
    """Make ``run_id`` the promoted run; a damaged run is refused (``promotable``). The online store is
    not touched: ``recctl.serving.store.promote`` fills it from the run first."""
    path = promotable(runs_dir, run_id)
    meta = read_meta(path)
    meta["promoted_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_json(path / "meta.json", meta)
    tmp = runs_dir / f".{PROMOTED}.tmp"
    tmp.write_text(run_id + "\n", encoding="utf-8")
    os.replace(tmp, runs_dir / PROMOTED)


def promoted(runs_dir: Path) -> str | None:
    try:
        text = (runs_dir / PROMOTED).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise NotTrainedError(f"{runs_dir / PROMOTED} cannot be read ({run_files.first_line(exc)})",
                              hint="`recctl runs promote ID` rewrites it") from exc  # fmt: skip
    return text or None


def read_meta(path: Path) -> dict[str, Any]:
    """The run's meta.json; NotTrainedError naming the run and the file when it is garbage."""
    return run_files.read_object(path / "meta.json", path)


def read_config(path: Path) -> dict[str, Any]:
    """The run's resolved config (config.json); NotTrainedError naming the run and the file."""
    return run_files.read_object(path / "config.json", path)


def describe(runs_dir: Path, run_id: str) -> dict[str, Any]:
    """A run's meta.json, whether it is promoted, and each ranker's feature importances (gain share and
    number of splits per feature, most important first) from its ``ranker.json``. A damaged run (its
    files against the manifest, a pickle in it) is a NotTrainedError naming the file."""
    path = run_path(runs_dir, run_id)
    meta = read_meta(path)
    read_config(path)
    run_files.verify(path)
    meta["promoted"] = promoted(runs_dir) == run_id
    for name, model in (meta.get("models") or {}).items():
        ranker = path / "models" / name / "ranker.json"
        if ranker.exists() and isinstance(model, dict):
            info = run_files.read_object(ranker, path)
            if not isinstance(info.get("importances"), dict):
                raise run_files.damaged(path, ranker, "has no feature importances")
            model["importances"] = info["importances"]
            model.pop("top_features", None)
    return meta


def _looks_like_run(path: Path) -> bool:
    return any((path / f).exists() for f in ("meta.json", "config.json", "models", run_files.MANIFEST))


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Every run, oldest first, with ``promoted``; a damaged one (unreadable meta.json or config.json,
    a file missing or of another size than the manifest says, a pickle in it) is listed with
    ``status = "broken"`` and the ``problem``, never failing the listing."""
    if not runs_dir.is_dir():
        return []
    current = promoted(runs_dir)
    out = []
    for p in sorted(runs_dir.iterdir()):
        if not p.is_dir() or p.name.startswith(".") or not _looks_like_run(p):
            continue
        wrong = run_files.problem(p) if (p / "meta.json").exists() else "meta.json is missing"
        if wrong is None:
            meta = read_meta(p)
        else:
            try:
                meta = read_meta(p)
            except NotTrainedError:
                meta = {}
            meta = {"run_id": p.name, "created_at": meta.get("created_at"), "models": meta.get("models") or {},
                    "status": "broken", "problem": wrong}  # fmt: skip
        meta["promoted"] = p.name == current
        out.append(meta)
    return out


# ------------------------------------------------------------------------------------------- pruning


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def prune(runs_dir: Path, keep: int, *, dry_run: bool = False) -> dict[str, Any]:
    """Remove every run but the ``keep`` newest (run ids sort by creation time) and the promoted one,
    broken runs included. Each removed run is first renamed to a hidden ``.tmp-prune-<id>`` folder (no
    reader sees half a run; a crash leaves it to ``sweep_staging``), then deleted. Returns the kept
    and the removed runs (id, created_at, bytes) and the bytes freed."""
    live = promoted(runs_dir)
    found = (
        sorted(
            p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and _looks_like_run(p)
        )
        if runs_dir.is_dir()
        else []
    )
    newest = {p.name for p in found[len(found) - keep :]} if keep > 0 else set()
    removed: list[dict[str, Any]] = []
    kept: list[str] = []
    for p in found:
        if p.name in newest or p.name == live:
            kept.append(p.name)
            continue
        try:
            created = read_meta(p).get("created_at")
        except NotTrainedError:
            created = None
        removed.append({"run_id": p.name, "created_at": created, "bytes": _size(p)})
        if not dry_run:
            gone = runs_dir / f"{STAGING_PREFIX}prune-{p.name}"
            os.replace(p, gone)
            discard(gone)
    return {"kept": kept, "promoted": live, "removed": removed, "dry_run": dry_run,
            "freed_bytes": sum(int(r["bytes"]) for r in removed)}  # fmt: skip
