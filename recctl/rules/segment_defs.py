"""Customer segment definitions: ``configs/segments.toml`` → pydantic models (see that file for every key).

A segment is a name, a description, conditions that must all hold (an omitted condition is no
condition) and actions: ``boost`` / ``bury`` matching items in its members' recommendations by
``factor``, or ``emit`` an action id the shop shows (a banner, a mail) that recctl only reports.
:mod:`recctl.rules.segments` computes membership and turns the actions into business rules.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from recctl.config import Strict, VisitorState, unique_names
from recctl.errors import ConfigError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_HINT = "every key is documented in the example that ships with recctl as configs/segments.toml"


class SegmentAction(Strict):
    """One ``[[segments.actions]]``: boost / bury the items matching categories, brands and a price range
    (AND; each list any of its values) by ``factor``, or emit the action id ``id``."""

    type: Literal["boost", "bury", "emit"]
    categories: list[str] = Field(default_factory=list)  # category path prefixes, whole levels
    brands: list[str] = Field(default_factory=list)
    price_min: float | None = Field(None, ge=0)
    price_max: float | None = Field(None, ge=0)
    factor: float | None = Field(None, gt=1)
    id: str | None = Field(None, min_length=1, pattern=r"^[^\x00-\x1f]+$")

    @model_validator(mode="after")
    def _consistent(self) -> SegmentAction:
        scaled = self.type in ("boost", "bury")
        matches = bool(self.categories or self.brands) or (self.price_min, self.price_max) != (None, None)
        if scaled:
            if self.factor is None:
                raise ValueError(f"action {self.type} needs factor (a number > 1)")
            if not matches:
                raise ValueError(
                    f"action {self.type} needs at least one of categories, brands, price_min, price_max"
                )
            if self.id is not None:
                raise ValueError("id is only for action emit")
        else:
            if self.id is None:
                raise ValueError("action emit needs id (the action id the shop shows, e.g. 'banner-sale')")
            if self.factor is not None or matches:
                raise ValueError("action emit takes only id (no factor, categories, brands or prices)")
        if self.price_min is not None and self.price_max is not None and self.price_min > self.price_max:
            raise ValueError("price_min is above price_max")
        return self


def _range(seg: Segment, low: str, high: str) -> None:
    lo, hi = getattr(seg, low), getattr(seg, high)
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"{low} ({lo:g}) is above {high} ({hi:g})")


class Segment(Strict):
    """One ``[[segments]]``: every condition given must hold."""

    name: str = Field(pattern=NAME_PATTERN, max_length=64)
    description: str = ""
    visitor_states: list[VisitorState] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    min_category_share: float | None = Field(None, gt=0, le=1)
    brands: list[str] = Field(default_factory=list)
    min_brand_share: float | None = Field(None, gt=0, le=1)
    viewed_price_min: float | None = Field(None, ge=0)
    viewed_price_max: float | None = Field(None, ge=0)
    bought_price_min: float | None = Field(None, ge=0)
    bought_price_max: float | None = Field(None, ge=0)
    recency_days_min: float | None = Field(None, ge=0)
    recency_days_max: float | None = Field(None, ge=0)
    min_orders: int | None = Field(None, ge=0)
    max_orders: int | None = Field(None, ge=0)
    min_spend: float | None = Field(None, ge=0)
    max_spend: float | None = Field(None, ge=0)
    window_days: float | None = Field(None, gt=0)
    actions: list[SegmentAction] = Field(default_factory=list)

    @field_validator("categories", "brands")
    @classmethod
    def _nonempty(cls, v: list[str]) -> list[str]:
        if any(not s.strip() for s in v):
            raise ValueError("empty names are not allowed")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Segment:
        for names, share, what in (
            (self.categories, self.min_category_share, "category"),
            (self.brands, self.min_brand_share, "brand"),
        ):
            key = "categories" if what == "category" else "brands"
            if names and share is None:
                raise ValueError(f"{key} needs min_{what}_share (the share of weighted events, 0 < s <= 1)")
            if share is not None and not names:
                raise ValueError(f"min_{what}_share needs {key}")
        for low, high in (
            ("viewed_price_min", "viewed_price_max"),
            ("bought_price_min", "bought_price_max"),
            ("recency_days_min", "recency_days_max"),
            ("min_orders", "max_orders"),
            ("min_spend", "max_spend"),
        ):
            _range(self, low, high)
        return self

    def conditions(self) -> list[str]:
        """The conditions in words, e.g. ["buyer", ">= 30% of weighted events in Women > Shoes"]."""
        out = []
        if self.visitor_states:
            out.append("state " + " or ".join(self.visitor_states))
        if self.categories:
            out.append(
                f">= {self.min_category_share:.0%} of weighted events in " + " or ".join(self.categories)
            )
        if self.brands:
            out.append(f">= {self.min_brand_share:.0%} of weighted events on " + " or ".join(self.brands))
        for what, lo, hi in (
            ("median viewed price", self.viewed_price_min, self.viewed_price_max),
            ("median price paid", self.bought_price_min, self.bought_price_max),
            ("days since last event", self.recency_days_min, self.recency_days_max),
            ("orders", self.min_orders, self.max_orders),
            ("spend", self.min_spend, self.max_spend),
        ):
            if lo is not None or hi is not None:
                out.append(_words(what, lo, hi))
        if self.window_days is not None and out:
            out.append(f"(affinities, prices, orders and spend over the last {self.window_days:g} days)")
        return out or ["everyone"]


def _words(what: str, lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{what} {lo:g} to {hi:g}"
    return f"{what} >= {lo:g}" if lo is not None else f"{what} <= {hi:g}"


def describe_action(action: SegmentAction) -> str:
    """An action in words: "boost x1.5: Women > Shoes, brand Valenti, price >= 150" or "emit banner-x"."""
    if action.type == "emit":
        return f"emit {action.id}"
    parts = list(action.categories)
    if action.brands:
        parts.append("brand " + " or ".join(action.brands))
    if action.price_min is not None or action.price_max is not None:
        parts.append(_words("price", action.price_min, action.price_max))
    return f"{action.type} x{action.factor:g}: " + ", ".join(parts)


class SegmentsFile(Strict):
    """The whole file: ``[[segments]]`` tables, names unique."""

    segments: list[Segment] = Field(default_factory=list)

    @field_validator("segments")
    @classmethod
    def _unique(cls, v: list[Segment]) -> list[Segment]:
        return unique_names(v, "segment names must be unique")

    def get(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.segments]


def _where(loc: tuple[int | str, ...], raw: dict[str, Any]) -> tuple[str, str]:
    """(which segment, which key) of a validation error location like ('segments', 0, 'actions', 1, 'x')."""
    if len(loc) < 2 or loc[0] != "segments" or not isinstance(loc[1], int):
        return "", ".".join(str(p) for p in loc)
    i = loc[1]
    seg = raw.get("segments", [])
    name = seg[i].get("name") if isinstance(seg, list) and i < len(seg) and isinstance(seg[i], dict) else None
    who = f"segment {name!r}" if isinstance(name, str) else f"segment #{i + 1}"
    key = "".join(f"[{p + 1}]" if isinstance(p, int) else f".{p}" for p in loc[2:]).lstrip(".")
    return who, key


def _format(exc: ValidationError, raw: dict[str, Any], path: Path) -> str:
    lines = []
    for err in exc.errors():
        who, key = _where(tuple(err["loc"]), raw)
        msg = str(err["msg"]).removeprefix("Value error, ")
        where = f"{who}: " if who else ""
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}unknown key '{key}'")
        elif key:
            lines.append(f"{where}'{key}': {msg}")
        else:
            lines.append(f"{where}{msg}")
    return f"invalid segments file {path}: " + "; ".join(lines)


_LOADED: dict[Path, tuple[int, int, SegmentsFile]] = {}


def load_segments(path: Path) -> SegmentsFile:
    """Read and check a segments file; errors name the segment and the key. Cached per process while
    the file's size and modification time stay the same (serving reads it on every live request)."""
    try:
        st = path.stat()
    except OSError:
        st = None
    if st is not None and path in _LOADED and _LOADED[path][:2] == (st.st_mtime_ns, st.st_size):
        return _LOADED[path][2]
    loaded = _load(path)
    if st is not None:
        _LOADED[path] = (st.st_mtime_ns, st.st_size, loaded)
    return loaded


def _load(path: Path) -> SegmentsFile:
    if not path.exists():
        raise ConfigError(
            f"segments file not found: {path}",
            hint="create it (recctl's configs/segments.toml is a documented example) or set [serving] segments_file",
        )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse {path}: {exc}", hint=_HINT) from exc
    try:
        return SegmentsFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format(exc, raw, path), hint=_HINT) from exc
