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

import math
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from recctl import schema
from recctl.config import Strict, shown_key
from recctl.errors import ConfigError

Format = Literal["csv", "tsv", "json", "ndjson", "parquet", "sequences", "keyed_json"]
FORMATS = schema.FORMATS
#: The encodings DuckDB's CSV reader knows without extensions.
ENCODINGS = ("utf-8", "latin-1", "utf-16")


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

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, v: str | None) -> str | None:
        if v is not None and len(v) != 1:
            raise ValueError(f"the delimiter is one character, not {v!r}")
        if v in ("\n", "\r"):
            raise ValueError("the delimiter cannot be a line break")
        return v

    @field_validator("quote")
    @classmethod
    def _quote(cls, v: str | None) -> str | None:
        if v is not None and len(v) > 1:
            raise ValueError(f"the quote is one character (or empty for none), not {v!r}")
        return v

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        if v.lower() not in ENCODINGS:
            raise ValueError(f"unknown encoding {v!r}; use one of {', '.join(ENCODINGS)}")
        return v.lower()

    @field_validator("separator", "key_column", "value_column")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v:
            raise ValueError("must not be empty")
        return v

    @field_validator("column_names")
    @classmethod
    def _names(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v or any(not n.strip() for n in v):
                raise ValueError("column names must not be empty")
            low = [n.lower() for n in v]
            dup = sorted({n for n in v if low.count(n.lower()) > 1})
            if dup:
                raise ValueError(f"repeated column names: {', '.join(dup)}")
        return v


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

    @field_validator("constants")
    @classmethod
    def _finite(cls, v: dict[str, str | int | float | bool]) -> dict[str, str | int | float | bool]:
        for key, value in v.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"[constants] {key} = {value} is not a finite number")
        return v

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


def content_hash(mapping: Mapping) -> str:
    """SHA-256 of what the mapping does (every key but where it came from and its description): a file
    loaded with another mapping content is not the same load, so fixing a mapping re-reads the file."""
    import hashlib
    import json

    what = mapping.model_dump(mode="json", exclude={"source", "description"})
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


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
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse mapping {path}: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read mapping {path}: {exc.strerror or exc}") from exc
    if "source" in data:
        raise ConfigError(f"invalid mapping {path}: unknown key 'source'")
    if (where := _nul_key(data)) is not None:
        raise ConfigError(f"invalid mapping {path}: {shown_key(where)} contains a NUL character")
    try:
        return Mapping.model_validate({**data, "source": str(path)})
    except ValidationError as exc:
        raise ConfigError(f"invalid mapping {path}: {validation_message(exc)}") from exc


def validation_message(exc: ValidationError) -> str:
    """Pydantic's errors as one line, each naming its key ('read.header: Input should be ...')."""
    msgs = []
    for e in exc.errors():
        loc = ".".join(map(str, e["loc"]))
        if e["type"] == "extra_forbidden":
            msgs.append(f"unknown key '{loc}'")
            continue
        msg = str(e["msg"]).removeprefix("Value error, ")
        msgs.append(f"'{loc}': {msg}" if loc else msg)
    return "; ".join(msgs)


def _nul_key(node: Any, path: str = "") -> str | None:
    """The key path of the first string (key or value) with a NUL character (SQL text cannot hold one)."""
    if isinstance(node, str):
        return path if "\x00" in node else None
    items: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            here = f"{path}.{k}" if path else str(k)
            if "\x00" in str(k):
                return here
            items.append((here, v))
    elif isinstance(node, list):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(node)]
    return next((w for p, v in items if (w := _nul_key(v, p)) is not None), None)
