"""Typed configuration: ``configs/recctl.toml`` → pydantic models, with ``RECCTL_*`` overrides.

Precedence, lowest first: built-in defaults, the TOML file, environment variables, command-line flags.
Environment variables name a key path with ``__`` between levels, e.g.
``RECCTL_INGEST__FUTURE_TOLERANCE=2h`` or ``RECCTL_SEED=7``; ``RECCTL_WAREHOUSE`` alone sets
``warehouse.path``. Unknown keys, in the file or the environment, are errors that name the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recctl import windows
from recctl.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("configs/recctl.toml")
ENV_PREFIX = "RECCTL_"
#: Environment variables that are not config keys: the config file itself, the folder of public
#: datasets that benchmarks and real-data tests read, and the resolved config `recctl serve --workers N`
#: hands its worker processes.
ENV_NOT_CONFIG = frozenset({"RECCTL_CONFIG", "RECCTL_DATASETS", "RECCTL_SERVE_CONFIG_JSON"})

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """'90s', '15m', '2h', '1d', '4w' → timedelta."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 2h, 1d, 4w)")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def unique_names(values: list[Any], message: str) -> list[Any]:
    """``values`` (objects with a ``name``) unchanged, or a ValueError naming the repeated names."""
    names = [v.name for v in values]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{message}: {', '.join(dup)}")
    return values


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, defer_build=True)


#: Keys that moved: ``[warehouse] threads`` / ``memory_limit`` set DuckDB alone, beside polars, LightGBM
#: and the models' own use; one ``[resources]`` budget now derives DuckDB's share (``recctl.resources``).
_MOVED = {"threads": "resources.threads", "memory_limit": "resources.memory"}


class WarehouseConfig(Strict):
    path: Path = Field(Path("recctl.duckdb"), description="DuckDB file")
    lock_wait: float = Field(0.0, ge=0, description="seconds a writer waits for the lock before exit 75")

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and (moved := sorted(set(data) & set(_MOVED))):
            why = "one budget for DuckDB, polars and the models"
            raise ValueError("; ".join(f"'warehouse.{k}' moved to '{_MOVED[k]}' ({why})" for k in moved))
        return data


class ResourcesConfig(Strict):
    """What one recctl process may use; ``recctl.resources`` derives each library's setting from it."""

    memory: str | None = Field(
        None,
        description="memory budget of one recctl process, e.g. '16GB', '500MB' or '50%' of RAM: DuckDB gets "
        "half (and spills to temp_dir beyond it), frames and models the rest (item-side caps read it); "
        "default: none (DuckDB's own 80% of RAM)",
    )
    threads: int | None = Field(
        None, ge=1, le=1024, description="threads of DuckDB, polars, BLAS and LightGBM (default: all cores)"
    )
    temp_dir: Path | None = Field(
        None, description="where DuckDB spills beyond its memory (default: <warehouse>.tmp beside the file)"
    )

    @field_validator("memory")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        from recctl.resources import MIN_MEMORY, parse_size

        if v is None or not str(v).strip():
            return None
        if str(v).strip().startswith("-"):
            raise ValueError(f"a negative size: {v!r}")
        if parse_size(v) < MIN_MEMORY:
            raise ValueError(f"{v!r} is below {MIN_MEMORY // 2**20}MB, too small for DuckDB to run a query")
        return v


class IngestConfig(Strict):
    mappings_dir: Path = Path("configs/mappings")
    default_mapping: dict[str, str] = Field(
        default_factory=dict, description="table → mapping used when --mapping is not given"
    )
    extra_event_types: list[str] = Field(default_factory=list)
    future_tolerance: str = "1d"
    min_timestamp: datetime = datetime(1970, 1, 2)
    allow_file_functions: bool = Field(
        False,
        description="let mapping expressions call table functions (read_csv, read_text, glob, ...), "
        "scalar functions that reach outside the row and subqueries: for trusted mappings only",
    )
    max_reject_share: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="a file whose rejected rows reach this share of its records read (rejected / read >= "
        "it, and at least one) makes `recctl ingest` exit 65; its accepted rows stay loaded. 1.0: only "
        "when every row is rejected; 0: any rejected row",
    )

    @field_validator("future_tolerance")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("extra_event_types")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"event type names are lower_snake_case: {name!r}")
        return v


class PrepareConfig(Strict):
    """`recctl prepare`: clean-up filters, applied in this order. The defaults change nothing on ordinary
    shop data (they fill missing sessions and drop same-item view/click bursts within 2 s only), so a
    shop turns filters up knowingly rather than losing events by surprise. A number of 0 switches a
    threshold off."""

    sessionize: bool = True
    session_gap: str = "30m"
    resplit_sessions: bool = False
    collapse_repeats: bool = True
    repeat_window: str = "2s"
    repeat_event_types: list[str] = Field(default_factory=lambda: ["view", "click"])
    bots: bool = True
    bot_max_events_per_hour: int = Field(2000, ge=0)
    bot_max_events_per_day: int = Field(0, ge=0)
    bot_max_distinct_items_per_session: int = Field(0, ge=0)
    min_counts: bool = True
    min_user_events: int = Field(1, ge=0)
    min_item_users: int = Field(1, ge=0)
    k_core: bool = False

    @field_validator("session_gap")
    @classmethod
    def _gap(cls, v: str) -> str:
        if parse_duration(v) <= timedelta(0):
            raise ValueError("session_gap must be longer than zero")
        return v

    @field_validator("repeat_window")
    @classmethod
    def _window(cls, v: str) -> str:
        if v.strip() != "0":
            parse_duration(v)
        return v

    @field_validator("repeat_event_types")
    @classmethod
    def _no_purchases(cls, v: list[str]) -> list[str]:
        if "purchase" in v:
            raise ValueError("purchases are never collapsed: repeated purchases are real quantities")
        return v


class CandidateSpec(Strict):
    """One candidate generator: its registry ``kind`` and kind-specific ``params`` (checked by the kind)."""

    name: str
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)


def _window_or_error(spec: str, key: str) -> str:
    """A window of recctl.windows, or a ValueError (pydantic reports it with the key)."""
    try:
        return windows.check(spec, key)
    except ConfigError as exc:
        raise ValueError(f"{exc.message}: use {windows.GRAMMAR}") from None


class RankerConfig(Strict):
    """Stage two: the generators' candidates merged, described by features and ranked by LambdaRank."""

    enabled: bool = True  # false: `train` fits and serves the generators only
    name: str = "ranked"  # the pipeline's name in evaluations and runs
    generators: list[str] = Field(default_factory=list)  # names from [[candidates]]; empty = all
    # labels for training the ranker: temporal (the last label_window of training; targets =
    # [evaluate] target_events), last-item (each user's last interaction), last-basket (each user's last
    # basket of target events: order, else session, else day), auto (the one that mirrors the evaluation
    # protocol: last-item for leave-one-out, last-basket for next-basket, else temporal)
    label: Literal["auto", "temporal", "last-item", "last-basket"] = "auto"
    # temporal labels: the window at the end of training (recctl.windows: auto, 30m, 6h, 7d, 4w, 10%, ISO)
    label_window: str = "auto"
    # below this many labelled users or positives (labels found among the candidates), or when LightGBM
    # cannot fit, the pipeline serves the fallback instead of a ranker: "best" (the generator that finds
    # the most labels in its top 10; the blend when none or several tie), "blend" (the generators' lists
    # merged by reciprocal rank) or the name of one of its generators; the run's meta says so
    min_label_users: int = Field(20, ge=1)
    min_positives: int = Field(20, ge=1)
    fallback: str = Field("best", min_length=1)
    # everything else of recctl.ranking.pipeline.PipelineParams: n_per_generator, negatives, hard_rank,
    # max_users, valid_share, features, filter_seen, chunk_users, lgbm = {n_estimators, learning_rate, ...}
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("label_window")
    @classmethod
    def _window(cls, v: str) -> str:
        return _window_or_error(v, "[ranker] label_window")


Baseline = Literal["popular", "popular-recent", "random", "personal-top"]
BASELINES: tuple[Baseline, ...] = ("popular", "popular-recent", "random", "personal-top")
Protocol = Literal["temporal", "leave-one-out", "next-basket", "files"]
Variant = Literal["all", "new-items", "repeat"]


class EvaluateConfig(Strict):
    """``[evaluate]``. The variant says which targets count and what is filtered: ``all`` (every target,
    items the user already touched filtered from every list), ``new-items`` (only targets the user never
    touched; seen items filtered), ``repeat`` (every target, nothing filtered: repurchases can be hit, and
    the metrics are split into repeat and explore targets). ``filter_seen = false`` is the same thing as
    ``variant = "repeat"`` (it is taken as that variant); ``filter_seen = false`` with ``new-items`` is
    refused, as is the repeat variant with [rules] that exclude every bought item from the pipeline."""

    protocol: Protocol = "temporal"
    cutoff: str = "auto"  # where the test window starts (recctl.windows: auto, 6h, 4w, 10%, ISO date)
    target_events: list[str] = Field(default_factory=lambda: ["purchase"])
    variant: Variant = "all"
    filter_seen: bool = True
    ks: list[int] = Field(default_factory=lambda: [10, 20])
    curve_ks: list[int] = Field(default_factory=lambda: [1, 5, 10, 20, 50])
    n_boot: int = Field(1000, ge=0)
    candidate_ns: list[int] = Field(default_factory=list)
    baselines: list[Baseline] = Field(default_factory=lambda: list(BASELINES))
    recent_days: float = Field(7.0, gt=0)
    gate_metric: str = "ndcg@10"
    gate_tolerance: float = Field(0.02, ge=0, le=1)

    @field_validator("cutoff")
    @classmethod
    def _cutoff(cls, v: str) -> str:
        return _window_or_error(v, "[evaluate] cutoff")

    @field_validator("ks", "curve_ks")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v):
            raise ValueError("K values are positive integers")
        return sorted(set(v))

    @model_validator(mode="after")
    def _one_meaning(self) -> EvaluateConfig:
        if not self.filter_seen and self.variant == "new-items":
            raise ValueError(
                "filter_seen = false means variant repeat (repurchases count); new-items keeps only targets "
                "the user never touched, so it always filters seen items: drop one of the two settings"
            )
        return self

    def effective_variant(self, variant: str | None = None) -> str:
        """The variant an evaluation runs: ``variant`` (a --variant flag) or the configured one, with
        ``filter_seen = false`` read as ``repeat``."""
        v = variant or self.variant
        return "repeat" if v == "all" and not self.filter_seen and variant is None else v


class FeaturesConfig(Strict):
    windows: list[int] = Field(
        default_factory=lambda: [1, 7, 30, 90], description="days of the windowed counts (u_n_view_7d, ...)"
    )

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: list[int]) -> list[int]:
        if not v or any(w < 1 for w in v):
            raise ValueError("feature windows are positive numbers of days")
        return sorted(set(v))


def _default_candidates() -> list[CandidateSpec]:
    """One of every generator kind: what `recctl train` fits when the config names none (see the shipped
    configs/recctl.toml, which states the same list with the reasons)."""
    return [
        CandidateSpec(name="trending", kind="popular", params={"half_life_days": 7.0}),
        CandidateSpec(name="next-item", kind="cooccur"),
        CandidateSpec(name="viewed-together", kind="cooccur", params={"mode": "session"}),
        CandidateSpec(name="bought-together", kind="cooccur", params={"mode": "basket"}),
        CandidateSpec(name="itemknn", kind="itemknn"),
        CandidateSpec(name="content", kind="content"),
        CandidateSpec(name="affinity", kind="affinity"),
        CandidateSpec(name="ease", kind="ease", params={"top_items": 10000}),
        CandidateSpec(name="ials", kind="ials"),
        CandidateSpec(name="buy-again", kind="repeat"),
        CandidateSpec(name="sasrec", kind="sasrec"),
    ]


def _utc_naive(v: datetime | None) -> datetime | None:
    """Datetimes with a zone → naive UTC (the warehouse's timestamps); naive ones are taken as UTC."""
    if v is not None and v.tzinfo is not None:
        return v.astimezone(UTC).replace(tzinfo=None)
    return v


class RepurchaseEntry(Strict):
    """Items under ``category`` (a path prefix, matched by whole levels, case-insensitive) may be
    recommended again ``min_days`` after the user last bought that item."""

    category: str = Field(min_length=1, pattern=r"^[^\x00-\x1f]+$")
    min_days: float = Field(0.0, ge=0)


class BusinessRule(Strict):
    """One rule of ``[[rules.business]]``. The match criteria given are combined with AND, each list
    matching any of its values; ``users`` restricts the rule to those customers; ``segment = "name"`` to
    the members of that customer segment (of ``[serving] segments_file``, as last materialized by
    `recctl segments apply`; with ``users`` too, to the members among them) — the serving code resolves
    it into ``users`` with recctl.rules.segments.resolve_segment_rules; ``start``/``end`` to a time
    window (start inclusive, end exclusive). See recctl/rules/business.py."""

    name: str = Field(min_length=1, pattern=r"^[^\x00-\x1f]+$")  # shown in explanations
    action: Literal["exclude", "boost", "bury", "pin"]
    brands: list[str] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)  # category path prefixes
    price_min: float | None = Field(None, ge=0)
    price_max: float | None = Field(None, ge=0)
    items: list[str] = Field(default_factory=list)
    users: list[str] = Field(default_factory=list)  # empty = every customer
    segment: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # only its members
    start: datetime | None = None
    end: datetime | None = None
    factor: float | None = Field(None, gt=1)  # boost: scores > 0 × factor, < 0 ÷ factor; bury: inverse
    position: int | None = Field(None, ge=1)  # pin: the 1-based rank of the first pinned item
    add_if_missing: bool = False  # pin: add the items from the catalog when no generator proposed them

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return _utc_naive(v)

    @model_validator(mode="after")
    def _consistent(self) -> BusinessRule:
        who = f"rule {self.name!r}"
        if self.action in ("boost", "bury") and self.factor is None:
            raise ValueError(f"{who}: action {self.action} needs factor (a number > 1)")
        if self.action != "pin" and self.position is not None:
            raise ValueError(f"{who}: position is only for action pin")
        if self.action not in ("boost", "bury") and self.factor is not None:
            raise ValueError(f"{who}: factor is only for actions boost and bury")
        if self.action == "pin":
            if self.position is None:
                raise ValueError(f"{who}: action pin needs position (the 1-based rank)")
            if not self.items:
                raise ValueError(f"{who}: action pin needs items (the item ids to pin, in order)")
        elif self.add_if_missing:
            raise ValueError(f"{who}: add_if_missing is only for action pin")
        prices = (self.price_min, self.price_max)
        if not (self.brands or self.categories or self.items) and prices == (None, None):
            raise ValueError(f"{who}: give at least one of brands, categories, price_min, price_max, items")
        if self.price_min is not None and self.price_max is not None and self.price_min > self.price_max:
            raise ValueError(f"{who}: price_min is above price_max")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(f"{who}: start ({self.start}) is not before end ({self.end})")
        return self

    def active(self, now: datetime) -> bool:
        """Whether ``now`` (naive UTC or with a zone) is inside the rule's window."""
        t = now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo is not None else now
        return (self.start is None or self.start <= t) and (self.end is None or t < self.end)


class DiversityConfig(Strict):
    """Caps per brand and category within the top of each list, and optional MMR re-ranking."""

    max_per_brand: int = Field(0, ge=0)  # 0 = no cap
    max_per_category: int = Field(0, ge=0)
    category_depth: int = Field(0, ge=0)  # leading levels of the category path compared; 0 = all
    window: int = Field(0, ge=0)  # the top positions diversified; 0 = k (the whole list without k)
    mmr: bool = False
    mmr_lambda: float = Field(0.7, ge=0, le=1)  # 1 = relevance only (the input order)
    mmr_brand_weight: float = Field(0.5, ge=0, le=1)  # similarity = w·same brand + (1-w)·category overlap


class RulesConfig(Strict):
    """Per-customer filters, business rules and diversity, applied after ranking (recctl/rules/)."""

    exclude_bought: bool = True
    repurchase: list[RepurchaseEntry] = Field(default_factory=list)
    allow_repurchase_all_after_days: float | None = Field(None, ge=0)
    exclude_viewed_times: int = Field(0, ge=0)  # viewed at least this often and never bought; 0 = off
    exclude_out_of_stock: bool = True
    hide_event_types: list[str] = Field(default_factory=lambda: ["hide", "dislike", "not_interested"])
    business: list[BusinessRule] = Field(default_factory=list)
    diversity: DiversityConfig = Field(default_factory=DiversityConfig)

    @field_validator("business")
    @classmethod
    def _unique_names(cls, v: list[BusinessRule]) -> list[BusinessRule]:
        return unique_names(v, "rule names must be unique (they label explanations)")

    def allows_repurchase(self) -> bool:
        """Whether any bought item may be recommended again (so the pipeline's candidates keep them)."""
        return (
            not self.exclude_bought
            or bool(self.repurchase)
            or self.allow_repurchase_all_after_days is not None
        )

    def bought_policy(self) -> str:
        """What the rules do with items the customer bought, in words (the evaluation report states it)."""
        if not self.exclude_bought:
            return "bought items may be recommended again"
        allowed = [f"{e.category} after {e.min_days:g} days" for e in self.repurchase]
        if self.allow_repurchase_all_after_days is not None:
            allowed.append(f"everything else after {self.allow_repurchase_all_after_days:g} days")
        return "bought items excluded" + (f" except {'; '.join(allowed)}" if allowed else "")


VisitorState = Literal["new", "returning", "signed_in", "buyer"]
Strategy = Literal["trending", "personalized", "session"]


class StrategiesConfig(Strict):
    """What each visitor state gets (recctl/serving/states.py decides the state from the data):
    trending (popular items, in the context's category when there is one), personalized (the promoted
    run's pipeline), session (the visitor's recent events through the sequence model and co-occurrence)."""

    new: Strategy = "trending"
    returning: Strategy = "session"
    signed_in: Strategy = "personalized"
    buyer: Strategy = "personalized"


class ServingConfig(Strict):
    """``[serving]``: `recctl recommend`, `rerank`, `segments` and the online store (recctl/serving/)."""

    k: int = Field(10, ge=1, le=1000)  # list length when --k is not given
    # the online store (`recs`, filled by `recommend --all`) answers a user when its rows come from the
    # promoted run and are younger than max_age; otherwise the pipeline ranks on the fly
    max_age: str = "1d"
    # `recommend` and `rerank` (without --wait): seconds a reader retries while a writer has the warehouse
    # open read-write (train's --gate rows, the end of `recommend --all`, `segments apply`: about a second
    # each) before exit 75; a long ingest can take longer
    read_wait: float = Field(10.0, ge=0)
    strategies: StrategiesConfig = Field(default_factory=StrategiesConfig)
    # over-personalization guard: a visitor who touched fewer than min_items distinct items gets a blend
    # in which trending_share of the slots go to trending items, under a cap of max_per_category per
    # category; above it, lists are personalized (still under [rules] diversity)
    min_items: int = Field(3, ge=0)
    trending_share: float = Field(0.5, ge=0, le=1)
    max_per_category: int = Field(3, ge=0)
    # `recommend --item P --strategy similar`: weight of content (TF-IDF) against collaborative similarity
    similar_content_weight: float = Field(0.5, ge=0, le=1)
    # `rerank`: default impact of the user's affinities, 0 (order unchanged) … 100 (affinity only)
    rerank_impact: int = Field(50, ge=0, le=100)
    segments_file: Path = Path("configs/segments.toml")
    # `recommend --all`: users per chunk and worker processes
    batch_chunk_users: int = Field(2000, ge=1)
    batch_workers: int = Field(1, ge=1)

    @field_validator("max_age")
    @classmethod
    def _age(cls, v: str) -> str:
        parse_duration(v)
        return v


class ServiceConfig(Strict):
    """``[service]``: `recctl serve`, the HTTP service (recctl/service/). It answers from a snapshot of the
    warehouse (parquet files beside it, taken with a short read-only open) and the promoted run's models in
    memory, so cron's writers are never kept out for longer than the snapshot's copy; a new promotion or a
    changed warehouse file is picked up within ``reload_interval`` seconds without a restart."""

    host: str = "127.0.0.1"  # loopback by default: exposing it is a decision (a proxy, or --host 0.0.0.0)
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    reload_interval: float = Field(2.0, gt=0, description="seconds between checks for a new run or data")
    snapshot_dir: Path | None = Field(None, description="default: <warehouse>.serve beside the warehouse")
    # where POST /v1/events appends accepted events (fsync'd) for `recctl ingest events --inbox`
    inbox_dir: Path | None = Field(None, description="default: <warehouse>.inbox beside the warehouse")
    inbox_rotate: float = Field(
        60.0, gt=0, description="seconds after which an inbox file is closed for ingest"
    )
    # the key of /v1/events and admin routes (also RECCTL_API_KEY); reads need it only with require_key_for_reads
    # the events a visitor sent that the warehouse does not hold yet reach their next list (per worker)
    recent_events: int = Field(50, ge=0, description="newest events kept per visitor (0: none)")
    recent_visitors: int = Field(100_000, ge=1, description="visitors kept (least recently active go first)")
    recent_max_age: float = Field(3600.0, gt=0, description="seconds a visitor's recent event is kept")
    api_key: str | None = None
    require_key_for_reads: bool = False
    cors_origins: list[str] = Field(default_factory=list)  # browser origins allowed to call the API
    max_body_bytes: int = Field(1_000_000, ge=1024)  # larger request bodies are refused with 413
    max_items: int = Field(1000, ge=1)  # items of one rerank, events of one session or events request


class RecctlConfig(Strict):
    seed: int = Field(42, description="root seed; every random component derives its own from it")
    warehouse: WarehouseConfig = Field(default_factory=WarehouseConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    runs_dir: Path = Path("runs")
    candidates: list[CandidateSpec] = Field(default_factory=_default_candidates)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)

    def resolved(self) -> dict[str, Any]:
        """The config as plain JSON-able data (what `recctl status --config` prints and runs save); the
        service's API key is never written out, only whether one is set."""
        out = self.model_dump(mode="json")
        if out["service"]["api_key"] is not None:
            out["service"]["api_key"] = "(set)"
        return out


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX) or key in ENV_NOT_CONFIG:
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX) :].split("__")]
        if path == ["warehouse"]:
            path = ["warehouse", "path"]
        elif path == ["api_key"]:  # RECCTL_API_KEY: the service's key, kept out of config files
            path = ["service", "api_key"]
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {key} conflicts with another RECCTL_ variable")
        node[path[-1]] = _env_value(value)
    return out


def _env_value(value: str) -> Any:
    """Lists are given as TOML arrays (RECCTL_X='["a", "b"]'); everything else as a string."""
    v = value.strip()
    if v.startswith(("[", "{")):
        try:
            return tomllib.loads(f"v = {v}")["v"]
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"cannot parse environment value {value!r}: {exc}") from exc
    return value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def shown_key(key: str) -> str:
    """A key path for a message: quoted, control characters escaped (never a raw NUL on a terminal)."""
    return "'" + "".join(c if c.isprintable() else repr(c)[1:-1] for c in key) + "'"


def _nul_key(node: Any, path: str = "") -> str | None:
    """The key path of the first key or string value holding a NUL character (no path or SQL can)."""
    if isinstance(node, str):
        return path if "\x00" in node else None
    if isinstance(node, dict):
        for k, v in node.items():
            here = f"{path}.{k}" if path else str(k)
            if "\x00" in str(k) or (found := _nul_key(v, here)) is not None:
                return here if "\x00" in str(k) else found
    elif isinstance(node, list):
        for i, v in enumerate(node):
            if (found := _nul_key(v, f"{path}[{i}]")) is not None:
                return found
    return None


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key '{loc}'")
        elif err["type"] == "literal_error" and isinstance(err.get("input"), str):
            from recctl.names import closest

            valid = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
            near = closest(err["input"], valid)
            lines.append(f"'{loc}': {err['msg']}" + (f" (did you mean {near!r}?)" if near else ""))
        else:
            lines.append(f"'{loc}': {err['msg']}")
    return f"invalid configuration ({source}): " + "; ".join(lines)


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> RecctlConfig:
    """Load the config file (``path``, else ``configs/recctl.toml`` when present), then env, then overrides.

    Relative paths inside the file are taken relative to the current directory, as users run recctl
    from their project folder.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    source = "defaults"
    if path is None and env.get("RECCTL_CONFIG"):
        path = Path(env["RECCTL_CONFIG"])
    if path is not None and not path.exists():
        raise ConfigError(f"config file not found: {path}")
    file = path if path is not None else (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None)
    if file is not None:
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"cannot parse {file}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"cannot parse {file}: it is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read config {file}: {exc.strerror or exc}") from exc
        source = str(file)
    env_data = _env_overrides(env)
    if env_data:
        source += " + RECCTL_* environment"
    data = _merge(_merge(data, env_data), overrides or {})
    if (where := _nul_key(data)) is not None:
        raise ConfigError(f"invalid configuration ({source}): {shown_key(where)} contains a NUL character")
    try:
        return RecctlConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from exc
