"""``recctl ingest``: raw files → validated, de-duplicated rows in the warehouse."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from recctl import progress, schema
from recctl.config import RecctlConfig, parse_duration
from recctl.errors import ConfigError, InputMissingError
from recctl.ingest.guard import check_mapping
from recctl.ingest.loader import FileResult, load_file
from recctl.ingest.mapping import FORMATS, Mapping, identity_mapping, load_mapping
from recctl.ingest.stage import Rules
from recctl.names import one_of
from recctl.warehouse import Warehouse

__all__ = ["FileResult", "IngestReport", "ingest", "resolve_mapping", "resolve_paths"]

SUPPORTED_SUFFIXES = (".csv", ".tsv", ".tab", ".json", ".ndjson", ".jsonl", ".parquet", ".pq", ".txt")


@dataclass
class IngestReport:
    target: str
    mapping: str
    files: list[FileResult] = field(default_factory=list)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def over_reject_share(self) -> list[FileResult]:
        """Loaded files whose rejected share reached [ingest] max_reject_share."""
        return [f for f in self.files if f.reject_share_exceeded]

    def totals(self) -> dict[str, int]:
        keys = ("rows_read", "rows_loaded", "rows_rejected", "rows_duplicate")
        return {k: sum(int(getattr(f, k)) for f in self.files) for k in keys}

    def as_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "mapping": self.mapping,
            "files": [f.as_dict() for f in self.files],
            "totals": self.totals(),
            "failed": len(self.failed),
            "over_reject_share": len(self.over_reject_share),
        }


def _is_data_file(p: Path) -> bool:
    """A data file by its name; non-regular entries (a FIFO named events.csv) are kept so that the load
    reports them instead of skipping them silently."""
    name = p.name.lower().removesuffix(".gz").removesuffix(".gzip")
    return not p.name.startswith(".") and name.endswith(SUPPORTED_SUFFIXES) and p.exists() and not p.is_dir()


def _exists(p: Path) -> bool:
    """Whether ``p`` names something (a file, FIFO, device, ...); unreadable parents count as absent."""
    try:
        return p.exists()
    except OSError:
        return False


def resolve_paths(specs: Iterable[str]) -> list[Path]:
    """Files, folders (their data files, recursively) and glob patterns → sorted unique files."""
    out: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if _is_data_file(q))
            if not found:
                raise InputMissingError(f"no data files in folder {spec}")
            out.extend(found)
        elif _exists(p):
            out.append(p)  # a file, or a FIFO / device that the load reports as not a regular file
        elif any(ch in spec for ch in "*?["):
            found = sorted(Path(m) for m in glob.glob(spec, recursive=True) if Path(m).is_file())
            if not found:
                raise InputMissingError(f"no files match {spec}")
            out.extend(found)
        else:
            raise InputMissingError(f"input not found: {spec}")
    seen: set[Path] = set()
    unique = []
    for p in out:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(r)
    return unique


def resolve_mapping(cfg: RecctlConfig, target: str, name: str | None) -> Mapping:
    one_of(target, schema.TABLES, what="table", where="ingest TABLE")
    name = name or cfg.ingest.default_mapping.get(target)
    if not name:
        return identity_mapping(target)  # type: ignore[arg-type,unused-ignore]
    mapping = load_mapping(name, cfg.ingest.mappings_dir)
    if mapping.target != target:
        raise ConfigError(f"mapping {mapping.source} is for {mapping.target}, not {target}")
    return mapping


def rules_from(cfg: RecctlConfig, now: datetime | None = None) -> Rules:
    now = (now or datetime.now(UTC)).replace(tzinfo=None)
    tol = cfg.ingest.future_tolerance
    return Rules(
        event_types=schema.EVENT_TYPES + tuple(cfg.ingest.extra_event_types),
        now=now,
        future_limit=now + parse_duration(tol),
        future_tolerance=tol,
        min_timestamp=cfg.ingest.min_timestamp,
        allow_file_functions=cfg.ingest.allow_file_functions,
    )


def too_many_rejects(result: FileResult, max_share: float) -> bool:
    """Whether a loaded file's rejected rows reach ``max_share`` of its records read: rejected / read >=
    max_share with at least one rejected (so 1.0 means "every row rejected", 0 "any row rejected")."""
    if result.status != "loaded" or not result.rows_rejected or not result.rows_read:
        return False
    return result.rows_rejected / result.rows_read >= max_share


def check_format(fmt: str | None) -> None:
    """A usage error before anything is read (exit 2, no manifest row)."""
    if fmt is not None:
        one_of(fmt, FORMATS, what="format", where="--format")


def ingest(
    wh: Warehouse,
    cfg: RecctlConfig,
    target: str,
    paths: list[Path],
    *,
    mapping: Mapping,
    fmt: str | None = None,
    force: bool = False,
) -> IngestReport:
    """Load ``paths`` into ``target``, one transaction per file. Never raises for a bad file:
    failures are in the report (and the manifest), so that one broken export does not stop the rest.
    A bad mapping or format is refused first (ConfigError), before any file is touched. Progress: one
    stage per file, its end line with the file's status and row counts."""
    check_format(fmt)
    check_mapping(wh.con, mapping, allow_file_functions=cfg.ingest.allow_file_functions)
    for name in mapping.event_types.values():
        if name not in schema.EVENT_TYPES + tuple(cfg.ingest.extra_event_types):
            raise ConfigError(
                f"mapping {mapping.source} maps to unknown event type {name!r}",
                hint="add it to [ingest] extra_event_types in the config",
            )
    rules = rules_from(cfg)
    report = IngestReport(target, mapping.source)
    for i, path in enumerate(paths, 1):
        with progress.stage(f"{path.name} ({i}/{len(paths)})"):
            result = load_file(wh.con, path, mapping, rules, fmt=fmt, force=force)
            result.reject_share_exceeded = too_many_rejects(result, cfg.ingest.max_reject_share)
            progress.note(_summary(result))
        report.files.append(result)
    return report


def _summary(r: FileResult) -> str:
    """A file's outcome in a few words, for its stage log line."""
    if r.status != "loaded":
        return r.status
    counts = f"{r.rows_loaded} of {r.rows_read} rows loaded"
    extra = [
        f"{n} {what}" for n, what in ((r.rows_rejected, "rejected"), (r.rows_duplicate, "duplicate")) if n
    ]
    return counts + (f" ({', '.join(extra)})" if extra else "")
