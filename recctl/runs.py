"""Model runs: ``runs/<run_id>/`` (resolved config, meta.json, models/…), and which one is promoted.

A run is written into a hidden temporary folder and renamed into place only when complete; promotion
replaces ``runs/PROMOTED`` atomically. A failed or killed training leaves the promoted run untouched.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recctl.errors import NotTrainedError

PROMOTED = "PROMOTED"


def new_run_id() -> str:
    now = datetime.now(UTC)
    return f"{now:%Y%m%d-%H%M%S}{now.microsecond // 1000:03d}-{secrets.token_hex(2)}"  # sorts by time


def run_path(runs_dir: Path, run_id: str) -> Path:
    path = runs_dir / run_id
    if not (path / "meta.json").exists():
        raise NotTrainedError(f"no run {run_id!r} in {runs_dir}", hint="`recctl runs list` shows the runs")
    return path


def staging_path(runs_dir: Path, run_id: str) -> Path:
    path = runs_dir / f".tmp-{run_id}"
    path.mkdir(parents=True)
    return path


def finish(runs_dir: Path, staging: Path, run_id: str, meta: dict[str, Any]) -> Path:
    """Write meta.json and move the complete run into place."""
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


def promote(runs_dir: Path, run_id: str) -> None:
    path = run_path(runs_dir, run_id)
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
    return text or None


def read_meta(path: Path) -> dict[str, Any]:
    return dict(json.loads((path / "meta.json").read_text(encoding="utf-8")))


def describe(runs_dir: Path, run_id: str) -> dict[str, Any]:
    """A run's meta.json, whether it is promoted, and each ranker's feature importances (gain share and
    number of splits per feature, most important first) from its ``ranker.json``."""
    path = run_path(runs_dir, run_id)
    meta = read_meta(path)
    meta["promoted"] = promoted(runs_dir) == run_id
    for name in meta.get("models", {}):
        ranker = path / "models" / name / "ranker.json"
        if ranker.exists():
            info = json.loads(ranker.read_text(encoding="utf-8"))
            meta["models"][name]["importances"] = info["importances"]
            meta["models"][name].pop("top_features", None)
    return meta


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    if not runs_dir.is_dir():
        return []
    current = promoted(runs_dir)
    out = []
    for p in sorted(runs_dir.iterdir()):
        if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").exists():
            meta = read_meta(p)
            meta["promoted"] = p.name == current
            out.append(meta)
    return out
