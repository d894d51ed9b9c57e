"""The files of a saved run: a manifest of their sizes and SHA-256, the checks made before a model is
loaded, and the one-line message when one cannot be read.

``manifest.json`` (written by ``runs.finish`` before the run is moved into place) lists every file of the
run except ``meta.json`` (rewritten on promotion), with its size, SHA-256 and modification time (serving
hashes only a file whose time changed; a hash is computed once per process). Before serving loads a model folder, its files are
checked against it: a missing, truncated or altered file is named, with the run, before any parser sees
it (a truncated LightGBM text model crashed the process). Runs saved before the manifest existed are
checked by parsing (``diagnose``) when a load fails. A run never holds a pickle: a ``.pkl`` / ``.pickle`` /
``.joblib`` file in it refuses the run (nothing is ever unpickled).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from recctl.errors import NotTrainedError

MANIFEST = "manifest.json"
OWNER = "owner.json"  # a staging folder's owner (recctl.runs), removed before the run is moved into place
UNLISTED = frozenset({"meta.json", MANIFEST, OWNER})
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
HINT = "promote another run (`recctl runs list`, `recctl runs promote ID`) or run `recctl train` again"


class BadFile(ValueError):
    """A file of a run that a loader found unusable (``path``: the file, ``why``: what is wrong)."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path.name} {why}")
        self.path = path
        self.why = why


def run_root(path: Path) -> Path | None:
    """The run folder holding ``path`` (the nearest ancestor with a meta.json or a manifest)."""
    for p in (path, *path.parents):
        if (p / "meta.json").exists() or (p / MANIFEST).exists():
            return p
    return None


def _rel(run: Path | None, path: Path) -> str:
    if run is None:
        return str(path)
    try:
        return str(path.relative_to(run))
    except ValueError:
        return str(path)


def damaged(run: Path, file: Path | str, why: str) -> NotTrainedError:
    """``run <id>: <file> <why>`` with the hint to promote another run or retrain."""
    rel = file if isinstance(file, str) else _rel(run, file)
    return NotTrainedError(f"run {run.name}: {rel} {why}", hint=HINT)


def first_line(exc: BaseException, limit: int = 160) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_json(path: Path, *, obj: bool = True) -> Any:
    """A JSON file (a JSON object when ``obj``) of a model folder; BadFile when missing or garbage."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadFile(path, "is missing") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadFile(path, f"is not valid JSON ({first_line(exc)})") from exc
    except OSError as exc:
        raise BadFile(path, f"cannot be read ({first_line(exc)})") from exc
    if obj and not isinstance(data, dict):
        raise BadFile(path, "is not a JSON object")
    return data


def read_object(path: Path, run: Path | None = None) -> dict[str, Any]:
    """A JSON object file of a run (meta.json, config.json, …); NotTrainedError naming the run and the
    file when it is missing or garbage."""
    try:
        data: dict[str, Any] = load_json(path)
    except BadFile as exc:
        raise damaged(run or run_root(path) or path.parent, path, exc.why) from exc
    return data


# --------------------------------------------------------------------------------------------- manifest


_HASHED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) → SHA-256, per process


def _sha256(path: Path) -> str:
    """The file's SHA-256, computed once per process for a (path, size, mtime) (a long-lived caller
    loading a run again does not read its files again)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHED:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHED[key] = h.hexdigest()
    return _HASHED[key]


def write_manifest(run: Path) -> None:
    """``manifest.json``: size, SHA-256 and modification time of every file of ``run`` (but meta.json)."""
    files = {}
    for p in sorted(run.rglob("*")):
        rel = p.relative_to(run).as_posix()
        if p.is_file() and rel not in UNLISTED:
            st = p.stat()
            files[rel] = {"bytes": st.st_size, "sha256": _sha256(p), "mtime_ns": st.st_mtime_ns}
    (run / MANIFEST).write_text(json.dumps({"files": files}, indent=1), encoding="utf-8")


def pickles(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)


def refuse_pickles(run: Path, folder: Path | None = None) -> None:
    found = pickles(folder or run)
    if found:
        raise damaged(run, found[0], "is a pickle file: recctl never loads pickles (it could run any code)")


def verify(run: Path, folder: Path | None = None, *, hashes: bool = True, trust_mtime: bool = False) -> None:
    """Check the files of ``run`` under ``folder`` (default: all) against the manifest (sizes, and the
    SHA-256 when ``hashes``) and refuse pickles; NotTrainedError naming the first bad file. A run without
    a manifest (saved by an older recctl) is only checked for pickles. With ``trust_mtime`` (serving,
    on every call) a file whose size and modification time are still those the manifest recorded is not
    hashed again: any write to it changes its time (promotion and ``runs show`` hash every file)."""
    folder = folder or run
    refuse_pickles(run, folder)
    if not (run / MANIFEST).exists():
        return
    listed = read_object(run / MANIFEST, run).get("files")
    if not isinstance(listed, dict):
        raise damaged(run, MANIFEST, "has no file list")
    under = "" if folder == run else folder.relative_to(run).as_posix() + "/"
    for rel, want in sorted(listed.items()):
        if not rel.startswith(under):
            continue
        path = run / rel
        try:
            st = path.stat()
        except FileNotFoundError:
            raise damaged(run, rel, "is missing") from None
        size = st.st_size
        if not isinstance(want, dict) or size != want.get("bytes"):
            expected = want.get("bytes") if isinstance(want, dict) else "?"
            raise damaged(run, rel, f"is {size:,} bytes, the run saved {expected:,} (truncated or altered)"
                          if isinstance(expected, int) else "has no valid manifest entry")  # fmt: skip
        if not hashes or (trust_mtime and want.get("mtime_ns") == st.st_mtime_ns):
            continue
        if _sha256(path) != want.get("sha256"):
            raise damaged(run, rel, "does not match its SHA-256 in the manifest (the file was altered)")


def problem(run: Path, *, hashes: bool = False) -> str | None:
    """What is wrong with ``run`` (meta.json, config.json, the manifest, pickles), or None."""
    try:
        read_object(run / "meta.json", run)
        read_object(run / "config.json", run)
        verify(run, hashes=hashes)
    except NotTrainedError as exc:
        return exc.message.removeprefix(f"run {run.name}: ")
    return None


# ------------------------------------------------------------------------------------------ diagnosis


def _check_file(path: Path) -> str | None:
    """Why ``path`` cannot be parsed by what reads files of its kind, or None."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif suffix == ".parquet":
            import polars as pl

            pl.read_parquet(path)
        elif suffix in (".npy", ".npz"):
            import numpy as np

            loaded = np.load(path, allow_pickle=False)
            if suffix == ".npz":
                for key in loaded.files:
                    loaded[key]
        elif suffix == ".pt":
            import torch

            torch.load(path, weights_only=True)
        elif path.name == "ranker.txt":
            from recctl.ranking.model_text import check_model_text

            check_model_text(path)
    except BadFile as exc:
        return exc.why
    except MemoryError:
        raise
    except Exception as exc:
        import pickle

        if isinstance(exc, pickle.UnpicklingError):
            return "holds pickled objects, not only tensors: refused (it could run any code)"
        return f"cannot be read ({first_line(exc)})"
    return None


def diagnose(folder: Path) -> tuple[Path, str] | None:
    """The first file under ``folder`` that does not parse, and why (used when a load failed)."""
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        why = _check_file(path)
        if why is not None:
            return path, why
    return None


def _missing_in(folder: Path, message: str) -> Path | None:
    """The file under ``folder`` that a message such as polars' "No such file or directory (os error 2):
    …runs/x/models/m/ranking.parquet" (its path shortened at the front) names, when it is indeed missing."""
    import re

    named = re.sub(r"\s+\([^()]*\)\s*$", "", message.rpartition("): ")[2].strip())  # "(set POLARS_VERBOSE…)"
    parts = Path(named).parts
    for k in range(len(parts)):
        candidate = folder.joinpath(*parts[k:])
        if not candidate.exists() and candidate.parent.is_dir() and candidate.is_relative_to(folder):
            return candidate
    return None


def unloadable(name: str, path: Path, exc: BaseException) -> NotTrainedError:
    """The error for a saved model ``name`` in ``path`` that cannot be read back: the run and the file
    when they can be told (the exception's own file, else the first file under ``path`` that does not
    parse), else the folder and the exception."""
    run = run_root(path)
    bad: tuple[Path, str] | None = None
    if isinstance(exc, BadFile):
        bad = (exc.path, exc.why)
    elif isinstance(exc, FileNotFoundError):
        missing = Path(exc.filename) if exc.filename else _missing_in(path, str(exc))
        bad = (missing, "is missing") if missing is not None else diagnose(path)
    else:
        bad = diagnose(path)
    if run is not None and bad is not None:
        return NotTrainedError(
            f"run {run.name}: the saved model {name!r} cannot be loaded: {_rel(run, bad[0])} {bad[1]}",
            hint=HINT,
        )
    where = f"run {run.name}: " if run is not None else ""
    return NotTrainedError(
        f"{where}the saved model {name!r} in {path} cannot be loaded ({first_line(exc)})",
        hint="the run is incomplete or was saved by another recctl version; run `recctl train` again",
    )
