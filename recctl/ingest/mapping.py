"""Mapping files: how a shop's raw columns become recctl's canonical columns.

A mapping is a TOML file (see ``configs/mappings/*.toml``)::

    target = "events"                # events | items | users
    [read]                           # how to read the file (all optional)
    format = "csv"                   # csv tsv json ndjson parquet sequences keyed_json
    delimiter = ";"
    header = false
    column_names = ["user", "item", "rating", "ts"]
    encoding = "latin-1"
    [columns]                        # canonical column = source column name, or a DuckDB SQL expression
    user_id = "visitor_id"
    price = "sales_value / NULLIF(quantity, 0)"
    [constants]                      # canonical column = literal value
    event_type = "purchase"
    [event_types]                    # source value (case-insensitive) = canonical event type
    pv = "view"
    [attributes]                     # items/users: JSON attribute name = column or expression
    color = "colour"
    [timestamp]                      # how text or numbers in timestamp columns are read
    unit = "auto"                    # auto | s | ms | us for epoch numbers
    format = "%d/%m/%Y %H:%M"        # strptime format for text (default: ISO 8601)
    timezone = "UTC"                 # zone of timestamps that carry none

Canonical columns a mapping does not mention are taken from a source column of the same name when
there is one. Expressions are plain DuckDB SQL over the source columns; they run inside DuckDB, vectorized.
"""

from __future__ import annotations

import tomllib
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from recctl import schema
from recctl.config import Strict
from recctl.errors import ConfigError

Format = Literal["csv", "tsv", "json", "ndjson", "parquet", "sequences", "keyed_json"]
FORMATS = schema.FORMATS


class ReadOptions(Strict):
    format: Format | None = None
    delimiter: str | None = None
    header: bool = True
    column_names: list[str] | None = None
    encoding: str = "utf-8"
    quote: str | None = None
    #: ``sequences``: token separator; ``keyed_json``: names of the key and value columns.
    separator: str = " "
    key_column: str = "key"
    value_column: str = "value"
    #: ``sequences``: synthetic timestamps start here and grow by ``step_seconds`` per position.
    sequence_start: datetime = datetime(2000, 1, 1)
    step_seconds: int = Field(1, ge=1)


class TimestampOptions(Strict):
    unit: Literal["auto", "s", "ms", "us"] = "auto"
    format: str | None = None
    timezone: str = "UTC"


class Mapping(Strict):
    target: schema.TableName
    description: str = ""
    read: ReadOptions = Field(default_factory=ReadOptions)
    columns: dict[str, str] = Field(default_factory=dict)
    constants: dict[str, str | int | float | bool] = Field(default_factory=dict)
    event_types: dict[str, str] = Field(default_factory=dict)
    attributes: dict[str, str] = Field(default_factory=dict)
    timestamp: TimestampOptions = Field(default_factory=TimestampOptions)
    #: Where the mapping came from (set by the loader; not a file key).
    source: str = "built-in identity mapping"

    @model_validator(mode="after")
    def _check(self) -> Mapping:
        allowed = set(schema.mappable_columns(self.target))
        for section in ("columns", "constants"):
            for key in getattr(self, section):
                if key not in allowed:
                    raise ValueError(
                        f"[{section}] {key!r} is not a column of {self.target} "
                        f"(known: {', '.join(sorted(allowed))})"
                    )
        both = set(self.columns) & set(self.constants)
        if both:
            raise ValueError(f"{sorted(both)} set in both [columns] and [constants]")
        if self.event_types and self.target != "events":
            raise ValueError("[event_types] applies to target = 'events' only")
        if self.attributes and self.target == "events":
            raise ValueError("[attributes] applies to items and users only")
        if self.attributes and "attributes" in self.columns:
            raise ValueError("give attributes either as [columns] attributes or as [attributes], not both")
        return self


def identity_mapping(target: schema.TableName) -> Mapping:
    return Mapping(target=target)


def load_mapping(name_or_path: str, mappings_dir: Path) -> Mapping:
    """A mapping by file path, or by name from the mappings folder (``sample-shop-events``)."""
    path = Path(name_or_path)
    if not path.exists():
        candidate = mappings_dir / f"{name_or_path}.toml"
        if not candidate.exists():
            known = sorted(p.stem for p in mappings_dir.glob("*.toml")) if mappings_dir.is_dir() else []
            raise ConfigError(
                f"mapping not found: {name_or_path}",
                hint=f"known mappings in {mappings_dir}: {', '.join(known) or 'none'}",
            )
        path = candidate
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot parse mapping {path}: {exc}") from exc
    try:
        return Mapping.model_validate({**data, "source": str(path)})
    except ValidationError as exc:
        msgs = "; ".join(
            (f"unknown key '{'.'.join(map(str, e['loc']))}'" if e["type"] == "extra_forbidden" else e["msg"])
            for e in exc.errors()
        )
        raise ConfigError(f"invalid mapping {path}: {msgs}") from exc
