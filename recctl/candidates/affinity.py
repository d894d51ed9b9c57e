"""``affinity``: brand and category affinities, the user's price band and discount sensitivity.

From each user's history (events weighted by type and decayed with a half-life) the generator keeps a
profile (``profiles()``): brand shares, category shares at the leaf ('a > b > c') and parent ('a > b')
level, a price band (the weighted median of the prices seen/paid ± ``max(price_band_abs,
price_band_rel × median)``) and a discount sensitivity (the user's weighted share of discounted events,
shrunk towards the shop's base rate by ``discount_prior`` pseudo-events, as lift over that base in
[0, 1]). Candidates are eligible (in-stock) catalog items of the user's top brands or categories (each
group's ``per_group`` most popular) whose price is inside the band (items without a known price pass),
scored by

    w_brand·brand affinity + w_category·(leaf + parent_weight·parent affinity) / (1 + parent_weight)
    + w_price·(1 − |price − median| / half-width) + w_discount·sensitivity·discount fraction
    + w_popularity·popularity,

the discount term only for users whose sensitivity is at least ``sensitive_at``. Item prices and
discounts come from the catalog (price, original_price) and else from the training events (median price
paid, discount / (price + discount) shrunk to the shop's mean); popularity counts distinct users, each
with the recency of their latest event, log-scaled to [0, 1]. Brand and category terms use the affinity
(the user's share above the mean user's share of that value, scaled to [0, 1]) so that a brand everybody
buys (a store label) does not dominate. How much popularity should weigh differs by shop (a fashion shop:
about as much as one affinity; groceries: several times more), so unless ``w_popularity`` is set it is
calibrated in ``fit``: the value of ``calibration_grid`` with the best recall@20 when the profiles of the
first 90% of the training events predict the new items of the last 10% (``content.holdout``).
``for_items`` relates items by the same terms (same brand, same category, close price).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

import numpy as np
import polars as pl
from pydantic import Field

from recctl.candidates._keys import distinct, expand, lookup, member, sorted_pairs
from recctl.candidates.base import Params, register
from recctl.candidates.content import (
    DEFAULT_EVENT_WEIGHTS,
    best_weight,
    catalog_of,
    category_levels,
    holdout,
    popularity,
    weighted_events,
)

_CHUNK = 128  # users scored per candidate join (512 cost the fit 0.8 GB of candidates on Complete Journey)
_TABLES = ("items", "brand", "leaf", "parent", "stats")
_GROUPS = ("brand", "leaf", "parent")
_AFF = "affinity"


class AffinityParams(Params):
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    default_event_weight: float = Field(1.0, ge=0)
    half_life_days: float = Field(30.0, ge=0)  # 0 = no decay
    price_band_abs: float = Field(100.0, ge=0)  # band half-width = max(abs, rel × median price)
    price_band_rel: float = Field(0.0, ge=0)
    price_events: list[str] = Field(default_factory=list)  # types whose prices set the band; [] = all
    discount_events: list[str] = Field(default_factory=list)  # types counted for sensitivity; [] = all
    discount_prior: float = Field(5.0, ge=0)  # pseudo-events at the shop's base rate
    sensitive_at: float = Field(0.2, ge=0, le=1)  # sensitivity from which the discount term applies
    w_brand: float = 1.0
    w_category: float = 1.0
    parent_weight: float = Field(0.5, ge=0)
    w_price: float = 0.3
    w_discount: float = 1.5
    # popularity prior weight; None = calibrated in fit (recall@20 on the last 10% of training events)
    w_popularity: float | None = Field(None, ge=0)
    calibration_grid: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0])
    max_brands: int = Field(10, ge=0)  # the user's top brands / categories that propose candidates
    max_categories: int = Field(20, ge=0)
    per_group: int = Field(300, ge=1)  # most popular eligible items proposed per brand / category
    keep_out_of_stock: bool = False


def _shares(ev: pl.DataFrame, key: str, top: int) -> pl.DataFrame:
    """Each user's ``top`` values of ``key`` by share of their weighted events (ties by value), with the
    affinity: the share's excess over the mean user's share of that value, scaled to [0, 1]."""
    shares = (
        ev.filter(pl.col(key).is_not_null())
        .group_by("user_id", key)
        .agg(pl.col("w").sum())
        .with_columns(share=pl.col("w") / pl.col("w").sum().over("user_id"))
    )
    shares = shares.with_columns(pl.col("share").round(12))  # sums in any order give the same ranking
    mean = pl.col("share").sum().over(key) / max(shares["user_id"].n_unique(), 1)
    return (
        shares.with_columns(
            affinity=((pl.col("share") - mean) / (1 - mean).clip(lower_bound=1e-9)).clip(0, 1).round(12)
        )  # rounded too: the mean's parallel sum differed between runs in the 18th digit
        .sort(["user_id", "share", key], descending=[False, True, False])
        .filter(pl.int_range(pl.len()).over("user_id") < top)
        .select("user_id", key, "share", "affinity")
    )


def _top(scored: pl.DataFrame, key: str, n: int) -> pl.DataFrame:
    """Each ``key``'s ``n`` best rows by score (ties: lower item index ``i``), best first."""
    cut = scored.group_by(key).agg(cut=pl.col("score").top_k(n).min())
    top = scored.join(cut, on=key).filter(pl.col("score") >= pl.col("cut")).drop("cut")
    top = top.sort([key, "score", "i"], descending=[False, True, False])
    return top.filter(pl.int_range(pl.len()).over(key) < n)


@register("affinity")
class Affinity:
    kind = "affinity"
    Params = AffinityParams

    def __init__(self, name: str, params: AffinityParams) -> None:
        self.name = name
        self.params = params
        s, f = pl.String, pl.Float64
        item_cols = {"item_id": s, "brand": s, "leaf": s, "parent": s, "price": f, "discount": f, "pop": f}
        stats = ("centre", "low", "high", "half_width", "discount_share", "sensitivity")
        self.tables: dict[str, pl.DataFrame] = {
            "items": pl.DataFrame(schema={**item_cols, "eligible": pl.Boolean}),
            **{k: pl.DataFrame(schema={"user_id": s, k: s, "share": f, "affinity": f}) for k in _GROUPS},
            "stats": pl.DataFrame(schema={"user_id": s, **dict.fromkeys(stats, f)}),
        }
        self.pop_weight = params.w_popularity if params.w_popularity is not None else 1.0

    def fit(self, train: pl.DataFrame, *, seed: int, items: pl.DataFrame | None = None) -> None:
        p = self.params
        self.pop_weight = 1.0 if p.w_popularity is None else p.w_popularity
        if p.w_popularity is None:  # calibrated first, so its tables never sit beside the final ones
            early, targets = holdout(train, p.event_weights, p.default_event_weight, seed)
            if targets.height:
                seen = early.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String))
                grid = p.calibration_grid
                recs = self._rank(self._tables(early, items), targets["user_id"], 20, seen.unique(), grid)
                self.pop_weight = best_weight(grid, recs, targets)
            del early, targets
        self.tables = self._tables(train, items)

    def _tables(self, train: pl.DataFrame, items: pl.DataFrame | None) -> dict[str, pl.DataFrame]:
        p = self.params
        cat = catalog_of(train, items)
        for col in ("price", "discount"):
            if col not in train.columns:
                train = train.with_columns(pl.lit(None, pl.Float64).alias(col))
        for col in ("brand", "category", "price", "original_price", "in_stock"):
            if col not in cat.columns:
                cat = cat.with_columns(
                    pl.lit(None, pl.Boolean if col == "in_stock" else pl.String).alias(col)
                )
        # only the columns the tables read: the events' other columns (session and order ids, ...) would
        # ride along through the item join and the group-bys below
        ev = weighted_events(train, p.event_weights, p.default_event_weight, p.half_life_days).select(
            pl.col("user_id").cast(pl.String),
            pl.col("item_id").cast(pl.String),
            "event_type", "price", "discount", "recency", "w",
            frac=(pl.col("discount") / (pl.col("price") + pl.col("discount"))).fill_nan(None),
        )  # fmt: skip
        has_frac = pl.col("frac").is_finite().fill_null(False)
        mean_frac = ev.filter(has_frac)["frac"].mean()
        prior = p.discount_prior * (float(mean_frac) if isinstance(mean_frac, float) else 0.0)
        seen = ev.group_by("item_id").agg(
            paid=pl.col("price").median(),
            ev_disc=((pl.col("frac") * pl.col("w")).filter(has_frac).sum() + prior)
            / (pl.col("w").filter(has_frac).sum() + p.discount_prior).clip(lower_bound=1e-12),
        )
        pop = popularity(ev)
        levels = category_levels().list.eval(pl.element().filter(pl.element() != ""))
        price, orig = pl.col("price").cast(pl.Float64), pl.col("original_price").cast(pl.Float64)
        it = (
            cat.join(seen, on="item_id", how="left", maintain_order="left")
            .join(pop, on="item_id", how="left", maintain_order="left")
            .with_columns(lv=levels, cat_disc=pl.when(orig > 0).then((1 - price / orig).clip(0, 1)))
            .select(
                "item_id",
                brand=pl.col("brand").cast(pl.String).str.strip_chars().replace("", None),
                leaf=pl.col("lv").list.join(" > ").replace("", None),
                parent=pl.when(pl.col("lv").list.len() > 1).then(pl.col("lv").list.slice(0, pl.col("lv").list.len() - 1).list.join(" > ")),
                price=pl.coalesce(price, pl.col("paid")),
                discount=pl.coalesce("cat_disc", pl.col("ev_disc").clip(0, 1), pl.lit(0.0)),
                pop=pl.col("pop").fill_null(0.0),
                eligible=pl.lit(p.keep_out_of_stock) | pl.col("in_stock").cast(pl.Boolean).fill_null(True),
                orig=orig,
            )
        )  # fmt: skip
        ev = ev.join(
            it.select("item_id", "brand", "leaf", "parent", "orig", item_disc="discount"),
            on="item_id",
            how="left",
        ).with_columns(
            on_sale=(pl.col("discount").fill_null(0) > 0)
            | (pl.col("price") < 0.995 * pl.col("orig")).fill_null(False)
            | (pl.col("price").is_null() & (pl.col("item_disc") > 0.005))
        )
        top = {"brand": p.max_brands, "leaf": p.max_categories, "parent": p.max_categories}
        return {
            "items": it.drop("orig"),
            **{k: _shares(ev, k, top[k]) for k in _GROUPS},
            "stats": self._stats(ev),
        }

    def _stats(self, ev: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        pe = ev.filter(pl.col("price").is_not_null() & (pl.col("price") >= 0))
        if p.price_events:
            pe = pe.filter(pl.col("event_type").is_in(p.price_events))
        centre = (
            pe.sort("user_id", "price")
            .with_columns(cum=pl.col("w").cum_sum().over("user_id"), tot=pl.col("w").sum().over("user_id"))
            .filter(pl.col("cum") >= 0.5 * pl.col("tot"))
            .group_by("user_id")
            .agg(centre=pl.col("price").first())
        )
        de = ev.filter(pl.col("event_type").is_in(p.discount_events)) if p.discount_events else ev
        de = de.with_columns(pl.col("on_sale").fill_null(False).cast(pl.Float64))
        base = float(
            de.select(((pl.col("on_sale") * pl.col("w")).sum() / pl.col("w").sum()).fill_nan(0)).item()
        )
        disc = de.group_by("user_id").agg(
            discount_share=((pl.col("on_sale") * pl.col("w")).sum() + p.discount_prior * base)
            / (pl.col("w").sum() + p.discount_prior)
        )
        hw = pl.max_horizontal(pl.lit(p.price_band_abs), p.price_band_rel * pl.col("centre"))
        return (
            ev.select("user_id").unique().sort("user_id")
            .join(centre, on="user_id", how="left").join(disc, on="user_id", how="left")
            .with_columns(half_width=pl.when(pl.col("centre").is_not_null()).then(hw))
            .select(
                "user_id", "centre",
                low=(pl.col("centre") - pl.col("half_width")).clip(lower_bound=0), high=pl.col("centre") + pl.col("half_width"),
                half_width="half_width", discount_share=pl.col("discount_share").fill_null(base),
                sensitivity=((pl.col("discount_share").fill_null(base) - base) / max(1 - base, 1e-12)).clip(0, 1),
            )
        )  # fmt: skip

    def profiles(self) -> pl.DataFrame:
        """One row per known user: the price band (centre, low, high, half_width), discount_share,
        sensitivity and discount_sensitive, and the top brands, categories (leaf) and parent categories
        as lists of {name, share, affinity}, largest share first."""
        t = self.tables
        prof = t["stats"]
        for k, out in (("brand", "brands"), ("leaf", "categories"), ("parent", "parent_categories")):
            entry = pl.struct(pl.col(k).alias("name"), "share", "affinity").alias(out)
            prof = prof.join(
                t[k].group_by("user_id", maintain_order=True).agg(entry), on="user_id", how="left"
            )
        sensitive = pl.col("sensitivity") >= self.params.sensitive_at
        return prof.with_columns(discount_sensitive=sensitive).sort("user_id")

    def _encoded(
        self, t: dict[str, pl.DataFrame]
    ) -> tuple[pl.DataFrame, dict[str, pl.DataFrame], dict[str, pl.DataFrame]]:
        """Items with integer ids (i) and group codes, the code of each group value, and per group code
        its ``per_group`` most popular eligible items (joins on integers, not strings)."""
        items = t["items"].with_row_index("i")
        codes = {k: items.select(k).drop_nulls().unique().sort(k).with_row_index(f"{k}_c") for k in _GROUPS}
        for k in _GROUPS:
            items = items.join(codes[k], on=k, how="left", maintain_order="left")
        ok = items.filter("eligible")
        groups = {
            k: ok.filter(pl.col(f"{k}_c").is_not_null())
            .sort([f"{k}_c", "pop", "i"], descending=[False, True, False])
            .filter(pl.int_range(pl.len()).over(f"{k}_c") < self.params.per_group)
            .select(f"{k}_c", "i")
            for k in _GROUPS
        }
        return items, codes, groups

    def _score(self, same: dict[str, pl.Expr], centre: str, hw: str, w_pop: float) -> pl.Expr:
        p = self.params
        close = pl.when(pl.col(hw) > 0).then(1 - (pl.col("price") - pl.col(centre)).abs() / pl.col(hw))
        cat = (same["leaf"] + p.parent_weight * same["parent"]) / (1 + p.parent_weight)
        # rounded, so that the float noise of parallel sums never reorders items
        return (
            p.w_brand * same["brand"] + p.w_category * cat + p.w_price * close.fill_null(0).clip(0, 1)
            + p.w_discount * pl.col("sens") * pl.col("discount") + w_pop * pl.col("pop")
        ).fill_nan(0.0).round(9)  # fmt: skip

    def for_users(self, users: pl.Series, n: int, *, exclude: pl.DataFrame | None = None) -> pl.DataFrame:
        return self._rank(self.tables, users, n, exclude, [self.pop_weight])[0]

    def _rank(
        self, t: dict[str, pl.DataFrame], users: pl.Series, n: int, exclude: pl.DataFrame | None,
        w_pops: list[float],
    ) -> list[pl.DataFrame]:  # fmt: skip
        """For each popularity weight, the top ``n`` of the known ``users`` under the profiles ``t``."""
        p = self.params
        items, codes, groups = self._encoded(t)
        wanted = pl.DataFrame({"user_id": users.cast(pl.String)}).unique()
        sens = pl.when(pl.col("sensitivity") >= p.sensitive_at).then(pl.col("sensitivity")).fill_null(0)
        stats = (
            t["stats"].join(wanted, on="user_id").sort("user_id").with_row_index("u").with_columns(sens=sens)
        )
        uid = stats.select("u", "user_id")
        shares = {
            k: t[k].join(uid, on="user_id").join(codes[k], on=k).select("u", f"{k}_c", pl.col(_AFF).alias(f"s_{k}"))
            for k in _GROUPS
        }  # fmt: skip
        feats = items.select("i", "brand_c", "leaf_c", "parent_c", "price", "discount", "pop")
        ex = pl.DataFrame(schema={"u": pl.UInt32, "i": pl.UInt32})
        if exclude is not None and exclude.height:
            ex = (
                exclude.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String))
                .join(uid, on="user_id").join(items.select("item_id", "i"), on="item_id").select("u", "i")
            )  # fmt: skip
        in_band = (
            pl.col("price").is_null() | pl.col("low").is_null() | pl.col("price").is_between("low", "high")
        )
        same = {k: pl.col(f"s_{k}").fill_null(0) for k in _GROUPS}
        out: list[list[pl.DataFrame]] = [
            [pl.DataFrame(schema={"u": pl.UInt32, "i": pl.UInt32, "score": pl.Float64})] for _ in w_pops
        ]
        n_items = max(items.height, 1)
        # integer (user, item) and (user, group code) keys, so that the candidates are built by numpy
        # gathers instead of string-free but still hashed joins of millions of rows per chunk
        user_cols = stats.select("centre", "low", "high", "half_width", "sens")
        item_code = {k: items[f"{k}_c"].cast(pl.Float64).to_numpy() for k in _GROUPS}  # NaN: none
        by_code = {k: sorted_pairs(groups[k], f"{k}_c") for k in _GROUPS}
        ex_key = np.sort(ex["u"].to_numpy().astype(np.int64) * n_items + ex["i"].to_numpy())
        for start in range(0, stats.height, _CHUNK):
            chunk = {
                k: v.filter(pl.col("u").is_between(start, start + _CHUNK - 1)) for k, v in shares.items()
            }
            key = distinct(
                np.concatenate([expand(chunk[k], f"{k}_c", *by_code[k], n_items) for k in _GROUPS])
            )
            if ex_key.size:
                key = key[~member(key, ex_key)]
            u, i = (key // n_items).astype(np.uint32), (key % n_items).astype(np.uint32)
            cand = pl.DataFrame({"u": u, "i": i}).hstack(
                [*feats.drop("i")[i].get_columns(), *user_cols[u].get_columns()]
            )
            ok = cand.select(in_band.fill_null(False)).to_series().to_numpy()
            cand, u, i = cand.filter(ok), u[ok], i[ok]
            for k in _GROUPS:
                cand = cand.with_columns(lookup(chunk[k], k, u, item_code[k][i]).alias(f"s_{k}"))
            for j, w in enumerate(w_pops):
                scored = cand.select("u", "i", score=self._score(same, "centre", "half_width", w))
                out[j].append(_top(scored, "u", n))
        return [
            recs.select(
                user_id=uid["user_id"].gather(recs["u"]), item_id=items["item_id"].gather(recs["i"]), score="score",
                rank=pl.int_range(1, pl.len() + 1).over("u").cast(pl.Int32),
            )
            for recs in (pl.concat(frames) for frames in out)
        ]  # fmt: skip

    def for_items(self, items: pl.Series, n: int) -> pl.DataFrame:
        """Items of the same brand or category inside the item's own price band, by the same score."""
        p = self.params
        cat, _, groups = self._encoded(self.tables)
        cols = ["item_id", "i", "brand_c", "leaf_c", "parent_c", "price"]
        q = cat.select(cols).join(pl.DataFrame({"item_id": items.cast(pl.String)}).unique(), on="item_id")
        q = q.rename(lambda c: f"q_{c}")
        cand = pl.concat(
            [q.join(groups[k], left_on=f"q_{k}_c", right_on=f"{k}_c").select("q_i", "i") for k in _GROUPS]
        ).unique()
        cand = cand.join(q, on="q_i").join(cat.drop("item_id"), on="i").filter(pl.col("i") != pl.col("q_i"))
        hw = pl.max_horizontal(pl.lit(p.price_band_abs), p.price_band_rel * pl.col("q_price"))
        near = (pl.col("price") - pl.col("q_price")).abs() <= pl.col("hw")
        cand = cand.with_columns(hw=hw, sens=pl.lit(0.0)).filter(near.fill_null(True))
        same = {
            k: (pl.col(f"{k}_c") == pl.col(f"q_{k}_c")).fill_null(False).cast(pl.Float64) for k in _GROUPS
        }
        scored = cand.select("q_item_id", "i", score=self._score(same, "q_price", "hw", self.pop_weight))
        top = _top(scored, "q_item_id", n)
        return top.select(
            item_id="q_item_id",
            related_id=cat["item_id"].gather(top["i"]),
            score="score",
            rank=pl.int_range(1, pl.len() + 1).over("q_item_id").cast(pl.Int32),
        )

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for k in _TABLES:
            self.tables[k].write_parquet(path / f"{k}.parquet")
        state = {"params": self.params.model_dump(), "w_popularity": self.pop_weight}
        (path / "state.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, path: Path, name: str, params: dict[str, Any]) -> Self:
        gen = cls(name, AffinityParams.model_validate(params))
        gen.tables = {k: pl.read_parquet(path / f"{k}.parquet") for k in _TABLES}
        gen.pop_weight = float(json.loads((path / "state.json").read_text())["w_popularity"])
        return gen
