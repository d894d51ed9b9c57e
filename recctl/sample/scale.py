"""A synthetic shop of any size, streamed to Parquet with memory bounded independently of its size.

``recctl sample OUT_DIR --scale 10M`` writes ``events.parquet`` (one row group per ``chunk`` events),
``items.parquet`` and ``users.parquet``, loaded by the mappings ``scale-shop-events|items|users``. The
structure is the sample shop's (``recctl.sample.catalog``: category tree, brands with price ranges and
tiers), grown to a catalog of 100k items at 1M events and 1M items at 100M (``sqrt`` scaling):

- **items**: Zipf popularity (weight ``1 / rank^ZIPF_A`` over a random ranking), a leaf of the category
  tree, a brand serving the leaf's audience (brands past the sample shop's 25 copy one of them, tier and
  price range included), a price placed in the brand's range by the leaf's ``price_pos``, 15 % on sale;
- **users** (one per 10 events): heavy-tailed activity (Pareto weights cut at 300: most visit once or never in
  the window, a few a hundred times), an audience
  (women / men / kids), a price tier and a favourite brand of that tier, and a loyalty to it;
- **sessions**: a user drawn by activity, a start over ``days`` (13 weeks) with a daily rhythm, 1 + a
  geometric number of views (mean ~4.5) each from the favourite brand (by loyalty), the session's leaf at
  the user's tier, or the whole catalog by popularity; a view leads to an add-to-cart (more often for the
  favourite brand), a cart to a purchase at checkout, the session's last moment, under order id ``o<session>``.

Events are made in blocks of ``BLOCK`` sessions, each from its own child of the seed, so the output is a
pure function of (seed, events, items, users, days) whatever ``chunk`` is; the last block is cut to
exactly ``events`` rows. Everything is numpy / polars over whole blocks: no Python loop over events or users.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from recctl.errors import ConfigError
from recctl.sample.catalog import BRANDS, COLOR_P, COLORS, LEAVES, ROOT_SHARE, ROOTS, IntArr

BLOCK = 8192  # sessions per block (~37k events): the unit of determinism
ZIPF_A = 1.05
START = np.datetime64("2026-07-01T00:00:00", "s").astype(np.int64)
HOUR_P = np.array([1, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 5, 6, 6, 5, 5, 5, 6, 8, 9, 9, 8, 5, 3], dtype=float)
TIER_P = (0.5, 0.35, 0.15)
CITIES = ("New York", "Los Angeles", "Chicago", "Houston", "Phoenix", "Seattle", "Boston", "Miami")
AGE_GROUPS = ("18-24", "25-34", "35-44", "45-54", "55+")
DEVICES = ("mobile", "desktop", "tablet")
_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000, "b": 1_000_000_000}


def parse_count(text: str) -> int:
    """``"1M"``, ``"250k"``, ``"1.5M"``, ``"100000"`` → an event count (at least 1,000)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgb]?)\s*", text.lower().replace("_", "").replace(",", ""))
    if not m:
        raise ConfigError(f"--scale takes a count such as 1M, 250k or 100000, not {text!r}")
    n = round(float(m.group(1)) * _SUFFIX[m.group(2)])
    if n < 1000:
        raise ConfigError(f"--scale must be at least 1000 events, not {n:,}")
    return n


def default_items(events: int) -> int:
    """100k items at 1M events, 1M at 100M (``sqrt``), at least 1,000, at most 1M."""
    return int(min(1_000_000, max(1_000, round(100_000 * (events / 1e6) ** 0.5))))


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _id(prefix: str, col: str) -> pl.Expr:
    """``prefix`` + the integer column zero-padded to 8 digits (``u00000042``)."""
    return (pl.lit(prefix) + pl.col(col).cast(pl.String).str.zfill(8)).alias(col)


class Shop:
    """Catalog, users and the lookup structures the sessions draw from (``O(items + users)`` memory)."""

    def __init__(self, seed: int, n_items: int, n_users: int) -> None:
        rng = _rng(seed, 0)
        n_brands = int(np.clip(n_items // 400, len(BRANDS), 2500))
        base = np.arange(n_brands) % len(BRANDS)
        self.brand_tier = np.array([b.tier for b in BRANDS])[base]
        lo, hi = (np.array([getattr(b, k) for b in BRANDS])[base] for k in ("lo", "hi"))
        serves = np.array([[r in b.roots for r in range(len(ROOTS))] for b in BRANDS])[base]  # (brand, root)
        size = np.array([b.size for b in BRANDS])[base] * rng.pareto(1.5, n_brands).clip(0.05, 20)
        leaf_w = np.array([lf.weight for lf in LEAVES])
        self.leaf_root = np.array([lf.root for lf in LEAVES])
        leaf = rng.choice(len(LEAVES), n_items, p=leaf_w / leaf_w.sum())
        # a brand serving the leaf's audience, by assortment size: one cdf per root
        root = self.leaf_root[leaf]
        brand = np.empty(n_items, dtype=np.int64)
        for r in range(len(ROOTS)):  # three audiences
            cand = np.flatnonzero(serves[:, r])
            cdf = np.cumsum(size[cand]) / size[cand].sum()
            sel = root == r
            brand[sel] = cand[
                np.searchsorted(cdf, rng.random(int(sel.sum())), side="right").clip(0, cand.size - 1)
            ]
        pos = (np.array([lf.price_pos for lf in LEAVES])[leaf] + rng.normal(0, 0.15, n_items)).clip(0, 1)
        list_cents = ((lo[brand] + (hi[brand] - lo[brand]) * pos) * 100).astype(np.int64) // 100 * 100 + 99
        sale = rng.random(n_items) < 0.15
        cents = np.where(sale, (list_cents * 0.7).astype(np.int64), list_cents)
        self.price = cents / 100.0
        rank = rng.permutation(n_items)  # popularity rank of each item
        pop = 1.0 / (rank + 1.0) ** ZIPF_A
        self.item_cdf = np.cumsum(pop) / pop.sum()
        tier = self.brand_tier[brand]
        self.brand, self.leaf, self.rank, self.tier = brand, leaf, rank, tier
        # items grouped by brand and by (leaf, tier), most popular first: a group is a slice of `order`
        self.by_brand = np.lexsort((rank, brand))
        self.brand_off = np.searchsorted(brand[self.by_brand], np.arange(n_brands + 1))
        g = leaf * 3 + tier
        self.by_lt = np.lexsort((rank, g))
        self.lt_off = np.searchsorted(g[self.by_lt], np.arange(len(LEAVES) * 3 + 1))
        self.leaf_off = self.lt_off[::3]
        names = np.array([b.name for b in BRANDS])[base]
        names = np.where(
            base == np.arange(n_brands),
            names,
            names + " " + (np.arange(n_brands) // len(BRANDS) + 1).astype(str),
        )
        nouns = np.array([lf.noun for lf in LEAVES])
        self.items = pl.DataFrame({
            "sku": np.arange(n_items),
            "name": pl.Series(names[brand]) + " " + pl.Series(nouns[leaf]) + " " + pl.Series(np.arange(n_items)).cast(pl.String),
            "brand": names[brand],
            "category": np.array([lf.path for lf in LEAVES])[leaf],
            "price": self.price,
            "list_price": list_cents / 100.0,
            "gender": np.array(["women", "men", "kids"])[root],
            "in_stock": rng.random(n_items) > 0.03,
            "rating": np.round(rng.uniform(3.0, 5.0, n_items), 1),
            "reviews": rng.poisson(200.0 / (rank + 10.0) ** 0.5),
            "color": np.array(COLORS)[rng.choice(len(COLORS), n_items, p=COLOR_P)],
            "noun": nouns[leaf],
            "created": pl.Series((START - rng.integers(0, 730 * 86_400, n_items)) * 1000).cast(pl.Datetime("ms")),
        }).with_columns(
            _id("p", "sku"),
            pl.format("{} {} for {} by {}.", pl.col("color").str.to_titlecase(), pl.col("noun"), pl.col("gender"),
                      pl.col("brand")).alias("description"),
            pl.format('{{"color": "{}"}}', pl.col("color")).alias("attributes"),
        ).drop("color", "noun")  # fmt: skip
        # users: activity, audience, tier, favourite brand of that tier serving that audience, loyalty
        rng = _rng(seed, 1)
        act = (rng.pareto(1.1, n_users) + 0.05).clip(0, 300)  # heavy-tailed, the heaviest ~70x the mean
        self.user_cdf = np.cumsum(act) / act.sum()
        self.u_root = rng.choice(3, n_users, p=np.array(ROOT_SHARE) / sum(ROOT_SHARE))
        self.u_tier = rng.choice(3, n_users, p=TIER_P)
        fav = np.empty(n_users, dtype=np.int64)
        for r in range(3):  # nine (audience, tier) groups, each a small cdf over brands
            for t in range(3):
                cand = np.flatnonzero(
                    serves[:, r] & (self.brand_tier == t) & (self.brand_off[1:] > self.brand_off[:-1])
                )
                if cand.size == 0:
                    cand = np.flatnonzero(serves[:, r])
                sel = (self.u_root == r) & (self.u_tier == t)
                cdf = np.cumsum(size[cand]) / size[cand].sum()
                fav[sel] = cand[
                    np.searchsorted(cdf, rng.random(int(sel.sum())), side="right").clip(0, cand.size - 1)
                ]
        self.fav, self.loyalty = fav, rng.beta(2.0, 3.0, n_users)
        self.users = pl.DataFrame({
            "customer_id": np.arange(n_users),
            "gender": np.array(["female", "male", "female"])[self.u_root],
            "age_group": np.array(AGE_GROUPS)[rng.integers(0, len(AGE_GROUPS), n_users)],
            "city": np.array(CITIES)[rng.integers(0, len(CITIES), n_users)],
            "device": np.array(DEVICES)[rng.choice(3, n_users, p=[0.6, 0.3, 0.1])],
            "signup_date": pl.Series(START // 86_400 - rng.integers(0, 1500, n_users)).cast(pl.Date),
        }).with_columns(_id("u", "customer_id"))  # fmt: skip
        leaves_of_root = [np.flatnonzero(self.leaf_root == r) for r in range(3)]
        self.root_leaves = leaves_of_root
        self.root_leaf_cdf = [np.cumsum(leaf_w[lv]) / leaf_w[lv].sum() for lv in leaves_of_root]

    def _pick(self, rng: np.random.Generator, order: IntArr, lo: IntArr, hi: IntArr) -> IntArr:
        """An item from each slice ``order[lo:hi]`` (most popular first), biased to its head (``u^3``)."""
        return order[lo + ((hi - lo) * rng.random(lo.size) ** 3).astype(np.int64)]

    def block(self, seed: int, b: int, days: int) -> pl.DataFrame:
        """The events of sessions ``b * BLOCK ..``, ordered by session then time."""
        rng = _rng(seed, 2, b)
        sess = b * BLOCK + np.arange(BLOCK)
        user = np.searchsorted(self.user_cdf, rng.random(BLOCK), side="right").clip(0, self.user_cdf.size - 1)
        t0 = (
            START
            + rng.integers(0, days, BLOCK) * 86_400
            + rng.choice(24, BLOCK, p=HOUR_P / HOUR_P.sum()) * 3600
        )
        t0 += rng.integers(0, 3600, BLOCK)
        n = rng.geometric(0.22, BLOCK).clip(1, 60)
        # the session's leaf: one of the user's audience's leaves by weight
        root = self.u_root[user]
        leaf = np.empty(BLOCK, dtype=np.int64)
        for r in range(3):
            sel = root == r
            pick = np.searchsorted(self.root_leaf_cdf[r], rng.random(int(sel.sum())), side="right")
            leaf[sel] = self.root_leaves[r][pick.clip(0, self.root_leaves[r].size - 1)]
        # views
        vs = np.repeat(np.arange(BLOCK), n)
        m = vs.size
        u = user[vs]
        src = rng.random(m)
        fav = self.fav[u]
        g = leaf[vs] * 3 + self.u_tier[u]
        lo, hi = self.lt_off[g], self.lt_off[g + 1]
        empty = hi == lo  # no item at this tier in the leaf: the whole leaf
        lo, hi = (
            np.where(empty, self.leaf_off[leaf[vs]], lo),
            np.where(empty, self.leaf_off[leaf[vs] + 1], hi),
        )
        item = np.searchsorted(self.item_cdf, rng.random(m), side="right").clip(0, self.item_cdf.size - 1)
        in_leaf = src < 0.75
        item[in_leaf] = self._pick(rng, self.by_lt, lo[in_leaf], hi[in_leaf])
        in_brand = src < 0.6 * self.loyalty[u]
        item[in_brand] = self._pick(
            rng, self.by_brand, self.brand_off[fav[in_brand]], self.brand_off[fav[in_brand] + 1]
        )
        gap = rng.exponential(50.0, m).astype(np.int64) + 5
        cs = np.cumsum(gap)
        first = np.cumsum(n) - n
        view_t = t0[vs] + cs - cs[first][vs] + gap[first][vs] - gap  # the first view at t0
        last = np.r_[vs[1:] != vs[:-1], True]
        next_gap = np.where(last, 40, gap)  # view j + 1 comes gap[j] after view j
        # the funnel: cart after a view (before the next one), purchase at checkout
        liked = (self.brand[item] == fav) | (self.tier[item] == self.u_tier[u])
        cart = rng.random(m) < np.where(liked, 0.12, 0.04)
        cart_t = view_t + 1 + (next_gap * 0.5).astype(np.int64)
        buy = cart & (rng.random(m) < 0.4)
        bi = np.flatnonzero(buy)  # one purchase line per (session, item): a re-bought item adds none
        o = bi[np.lexsort((item[bi], vs[bi]))]
        buy[o[1:][(vs[o][1:] == vs[o][:-1]) & (item[o][1:] == item[o][:-1])]] = False
        end_t = (view_t + next_gap)[last]  # per session (n >= 1)
        buy_t = end_t[vs] + 30
        qty = np.where(rng.random(m) < 0.1, 2, 1)
        kind = np.r_[
            np.zeros(m, np.int8), np.ones(int(cart.sum()), np.int8), np.full(int(buy.sum()), 2, np.int8)
        ]
        rows = np.r_[np.arange(m), np.flatnonzero(cart), np.flatnonzero(buy)]
        ts = np.r_[view_t, cart_t[cart], buy_t[buy]]
        order = np.lexsort((kind, ts, vs[rows]))
        rows, kind, ts = rows[order], kind[order], ts[order]
        s = sess[vs[rows]]
        buying = kind == 2
        return pl.DataFrame({
            "event_time": pl.Series(ts * 1000).cast(pl.Datetime("ms")),
            "customer_id": user[vs[rows]],
            "session": s,
            "sku": item[rows],
            "action": pl.Series(np.array(["view", "cart", "purchase"])[kind]),
            "price": self.price[item[rows]],
            "quantity": pl.Series(qty[rows]).cast(pl.Float64),
            "order_id": s,
            "buying": buying,
        }).with_columns(
            _id("u", "customer_id"), _id("s", "session"), _id("p", "sku"),
            pl.when("buying").then(_id("o", "order_id")),
            pl.when("buying").then(pl.col("quantity")).alias("quantity"),
        ).drop("buying")  # fmt: skip


def generate_scale(
    out_dir: Path,
    events: int,
    *,
    seed: int,
    items: int | None = None,
    users: int | None = None,
    days: int = 91,
    chunk: int = 1_000_000,
) -> dict[str, Any]:
    """Write ``events.parquet`` (exactly ``events`` rows, row groups of ``chunk``), ``items.parquet`` and
    ``users.parquet`` into ``out_dir``; returns counts and paths."""
    if chunk < 1:
        raise ConfigError("chunk must be at least 1 event")
    n_items = items or default_items(events)
    n_users = users or max(100, events // 10)
    out_dir.mkdir(parents=True, exist_ok=True)
    shop = Shop(seed, n_items, n_users)
    shop.items.write_parquet(out_dir / "items.parquet")
    shop.users.write_parquet(out_dir / "users.parquet")
    shop.items = shop.users = pl.DataFrame()  # written: only the arrays the sessions draw from stay
    path = out_dir / "events.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    counts = {"view": 0, "cart": 0, "purchase": 0}
    written, blocks, groups, buffered = 0, 0, 0, 0
    buf: list[pl.DataFrame] = []
    w: pq.ParquetWriter | None = None
    try:
        while written < events:
            df = shop.block(seed, blocks, days).head(events - written - buffered)
            blocks += 1
            buf.append(df)
            buffered += df.height
            while buffered >= chunk or (written + buffered == events and buffered):
                whole = pl.concat(buf)
                part, rest = whole.head(chunk), whole.slice(chunk)
                for k, v in part["action"].value_counts().iter_rows():
                    counts[k] += v
                table = part.to_arrow()
                w = w or pq.ParquetWriter(tmp, table.schema, compression="zstd")
                w.write_table(table, row_group_size=part.height)
                written, groups = written + part.height, groups + 1
                buf, buffered = ([rest] if rest.height else []), rest.height
    finally:
        if w is not None:
            w.close()
    tmp.replace(path)
    return {
        "out_dir": str(out_dir), "seed": seed, "events": written, "row_groups": groups, "blocks": blocks,
        "items": n_items, "users": n_users, "days": days, "by_action": counts,
        "files": [str(out_dir / f) for f in ("events.parquet", "items.parquet", "users.parquet")],
    }  # fmt: skip
