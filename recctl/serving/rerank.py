"""Re-ranking a given list (search results, a category page) by one visitor's affinities, 1:1.

Every item of the input comes back exactly once; only the order changes. Each item gets an **affinity**
in [0, 1] from the visitor's profile (recctl/serving/profile.py), a weighted sum of four components:

- ``brand``: the item's brand's share of the visitor's weighted events;
- ``category``: the visitor's share of the deepest prefix of the item's category path they touched,
  times the fraction of the path matched (a boot for a boots fan 1 × 3/3; a sandal, matched at
  "women > shoes", that share × 2/3);
- ``price``: 1 within ``PRICE_BAND`` ($100) of the visitor's median price, then halving every further
  ``PRICE_BAND`` (0.5 at $200 away, 0.25 at $300);
- ``discount``: the item's discount (relative to ``FULL_DISCOUNT``, 50% off) × the visitor's discount
  sensitivity relative to its range (+1: buys only on sale, −1: never does); it may subtract.

The final score blends the input order with it: ``(1 − λ)·position + λ·affinity`` with λ = impact / 100
and position = 1 − (original_rank − 1) / n; a stable sort keeps ties in input order, so impact 0 returns
the input order exactly and impact 100 orders by affinity alone. One human reason per item names the
strongest component ("your brand Stride", "in Women > Shoes, which you browse", "in your usual price
range", "30% off, and you like a deal").
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from recctl.errors import ConfigError, DataError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import duckdb

    from recctl.config import RecctlConfig
    from recctl.serving.profile import CatalogIndex, ItemFacts, Profile

#: Half-width of the price band in the shop's currency: items this close to the visitor's median price
#: score 1 on price; beyond it the score halves every further PRICE_BAND.
PRICE_BAND = 100.0
#: A discount this large (50% off) counts fully in the discount component.
FULL_DISCOUNT = 0.5
#: Weights of the components in the affinity (they sum to 1).
WEIGHTS: dict[str, float] = {"brand": 0.35, "category": 0.30, "price": 0.20, "discount": 0.15}
#: A brand or category share below this is not named as a reason.
MIN_REASON_SHARE = 0.1
NOT_IN_CATALOG = "not in the catalog"


@dataclass(frozen=True)
class Affinity:
    """An item's affinity for a visitor and its components (each in [0, 1]; discount in [-1, 1])."""

    score: float
    brand: float
    category: float
    price: float
    discount: float
    reason: str | None


@dataclass(frozen=True)
class RerankedItem:
    item_id: str
    rank: int
    original_rank: int
    score: float
    affinity: float | None  # None when the visitor is unknown (no profile)
    reason: str | None
    known: bool  # in the catalog


def price_closeness(price: float | None, median: float | None, band: float = PRICE_BAND) -> float:
    """1 within ``band`` of ``median``, then halving every further ``band``; 0 when either is unknown."""
    if price is None or median is None or band <= 0:
        return 0.0
    over = abs(price - median) - band
    return 1.0 if over <= 0 else 0.5 ** (over / band)


def _category(profile: Profile, facts: ItemFacts) -> tuple[float, str | None]:
    """(share of the deepest touched prefix × depth matched / depth, that prefix as displayed)."""
    prefixes = facts.prefixes
    for depth in range(len(prefixes), 0, -1):
        share = profile.categories.get(prefixes[depth - 1], 0.0)
        if share > 0:
            return share * depth / len(prefixes), " > ".join(facts.levels[:depth])
    return 0.0, None


def _sensitivity(profile: Profile) -> float:
    """The discount sensitivity scaled to [-1, 1] by its range [-rate, 1 - rate]."""
    s, rate = profile.discount_sensitivity, profile.shop_discount_rate
    if s >= 0:
        return s / (1 - rate) if rate < 1 else 0.0
    return s / rate if rate > 0 else 0.0


def components(profile: Profile, facts: ItemFacts, *, band: float = PRICE_BAND) -> Affinity:
    """The affinity of one catalog item for ``profile``, with its components and one reason."""
    brand = profile.brands.get(facts.brand, 0.0) if facts.brand else 0.0
    category, path = _category(profile, facts)
    price = price_closeness(facts.price, profile.price_median, band)
    discount = min(1.0, facts.discount / FULL_DISCOUNT) * _sensitivity(profile)
    parts = {"brand": brand, "category": category, "price": price, "discount": discount}
    score = min(1.0, max(0.0, sum(WEIGHTS[k] * v for k, v in parts.items())))
    named: list[tuple[float, str]] = []
    if brand >= MIN_REASON_SHARE:
        named.append((WEIGHTS["brand"] * brand, f"your brand {facts.brand}"))
    if category >= MIN_REASON_SHARE and path:
        named.append((WEIGHTS["category"] * category, f"in {path}, which you browse"))
    if discount > 0.1:
        named.append(
            (WEIGHTS["discount"] * discount, f"{round(facts.discount * 100)}% off, and you like a deal")
        )
    reason = (
        max(named, key=lambda t: t[0])[1] if named else None
    )  # first of equals: brand, category, discount
    if reason is None and price >= 1.0:
        reason = "in your usual price range"
    return Affinity(score, brand, category, price, discount, reason)


def affinity(profile: Profile, facts: ItemFacts, *, band: float = PRICE_BAND) -> float:
    """The item's affinity for the visitor, in [0, 1] (see :func:`components`)."""
    return components(profile, facts, band=band).score


def check_impact(impact: object) -> float:
    """The impact as a number in [0, 100], else ConfigError."""
    if isinstance(impact, bool) or not isinstance(impact, int | float) or not 0 <= impact <= 100:
        raise ConfigError(
            f"rerank impact must be a number from 0 to 100, not {impact!r}",
            hint="0 keeps the given order, 100 orders by the visitor's affinities alone",
        )
    return float(impact)


def check_items(item_ids: Sequence[str]) -> None:
    """Item ids must be non-empty strings, each once (DataError naming the offenders)."""
    bad = [i for i in item_ids if not isinstance(i, str) or not i.strip()]
    if bad:
        raise DataError(f"item ids must be non-empty strings; got {', '.join(repr(b) for b in bad[:10])}")
    dups = [i for i, n in Counter(item_ids).items() if n > 1]
    if dups:
        more = f" (and {len(dups) - 10} more)" if len(dups) > 10 else ""
        raise DataError(
            f"duplicate item ids in the list to re-rank: {', '.join(dups[:10])}{more}",
            hint="re-ranking is 1:1: give each item once",
        )


def rerank(
    profile: Profile | None,
    item_ids: Sequence[str],
    facts: Mapping[str, ItemFacts],
    impact: float,
    *,
    band: float = PRICE_BAND,
) -> list[RerankedItem]:
    """``item_ids`` re-ordered by ``(1 − λ)·position + λ·affinity`` (λ = impact / 100), every item once.

    Items missing from ``facts`` keep affinity 0 and ``known = False``; without a profile the input order
    is returned with the position scores (affinity None)."""
    lam = check_impact(impact) / 100.0
    check_items(item_ids)
    n = len(item_ids)
    rows: list[tuple[str, int, float, float | None, str | None, bool]] = []
    for pos, item_id in enumerate(item_ids):
        position = 1.0 - pos / n
        fact = facts.get(item_id)
        if profile is None:
            rows.append(
                (item_id, pos + 1, position, None, NOT_IN_CATALOG if fact is None else None, fact is not None)
            )
            continue
        aff = components(profile, fact, band=band) if fact is not None else None
        a = aff.score if aff is not None else 0.0
        score = position if lam == 0 else a if lam == 1 else (1 - lam) * position + lam * a
        rows.append((item_id, pos + 1, score, a, aff.reason if aff else NOT_IN_CATALOG, fact is not None))
    order = sorted(range(n), key=lambda i: -rows[i][2])  # stable: ties keep the input order
    return [
        RerankedItem(
            item_id=r[0], rank=k + 1, original_rank=r[1], score=r[2], affinity=r[3], reason=r[4], known=r[5]
        )
        for k, r in enumerate(rows[i] for i in order)
    ]


def run_rerank(
    con: duckdb.DuckDBPyConnection,
    cfg: RecctlConfig,
    user_id: str,
    item_ids: Sequence[str],
    impact: float | None = None,
    *,
    index: CatalogIndex | None = None,
) -> dict[str, Any]:
    """Re-rank ``item_ids`` for ``user_id`` from the warehouse (impact default: [serving] rerank_impact).

    Returns the JSON document ``{user_id, impact, personalized, items: [{item_id, rank, original_rank,
    score, affinity, reason, known}]}``; ``personalized`` is false for a visitor without item events.
    A long-lived caller passes ``index`` (``profile.catalog_index``): the catalog then comes from memory
    and only the user's events are queried."""
    from recctl.serving.profile import facts_from_index, item_facts, profile_from_index, user_profile

    value = check_impact(cfg.serving.rerank_impact if impact is None else impact)
    if not isinstance(user_id, str) or not user_id.strip():
        raise ConfigError("a user id is needed to re-rank for", hint="pass --user ID")
    check_items(item_ids)
    if index is not None:
        profile = profile_from_index(con, user_id, index)
        facts = facts_from_index(index, list(item_ids))
    else:
        profile = user_profile(con, user_id)
        facts = item_facts(con, list(item_ids))
    ranked = rerank(profile, item_ids, facts, value)
    return {
        "user_id": user_id,
        "impact": int(value) if value == int(value) else value,
        "personalized": profile is not None,
        "items": [
            {
                "item_id": r.item_id,
                "rank": r.rank,
                "original_rank": r.original_rank,
                "score": _round(r.score),
                "affinity": None if r.affinity is None else _round(r.affinity),
                "reason": r.reason,
                "known": r.known,
            }
            for r in ranked
        ],
    }


def _round(x: float) -> float:
    return round(x, 6) if math.isfinite(x) else x
