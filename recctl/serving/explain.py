"""One human reason per recommended item, taken from what produced it.

The item's first source (the generator that ranked it highest) decides the kind of reason:

- co-occurrence, basket mode → "bought together with <title>"; session mode → "viewed together with
  <title>"; sequential → "often viewed after <title>";
- any other model with item-to-item scores (itemknn, content, ease, ials, sasrec) → "because you viewed
  <title>";
- affinity → "your brand <brand>", else "in your usual price range", else "in <category>, which you
  browse";
- popular / trending → "trending in <category>";
- no source (an item a pin added) → "featured".

``<title>`` names the anchor (its title; without one its brand and category, "Samsung Smartphones"; an
anchor with none of them is not named, and another reason is given): among the visitor's recent items,
the one the source itself relates most to the recommended item (its ``pair_scores``, else its top ``ANCHOR_N`` of ``for_items``; the k-th most recent
weighted ``RECENCY ** (k - 1)``).
When no recent item relates to it, the reason falls back to the visitor's brand, price band or category,
and finally to "picked for you from your recent activity". Everything is vectorized over all users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from recctl.candidates.base import PairScorer
from recctl.serving.session import PRICE_BAND, RECENCY

if TYPE_CHECKING:
    from recctl.serving.served import Served

ANCHOR_N = 200  # related items per recent item searched for the anchor
BRAND_SHARE = 0.25  # a brand is "yours" from this share of your item events on
_PHRASE = {
    "basket": "bought together with",
    "session": "viewed together with",
    "sequential": "often viewed after",
}


def _leaf(col: str) -> pl.Expr:
    return pl.col(col).str.split(">").list.last().str.strip_chars()


def _blank_null(col: str) -> pl.Expr:
    text = pl.col(col).cast(pl.String).str.strip_chars()
    return pl.when(text == "").then(None).otherwise(text)


def label(separator: str = " ", *, whole_category: bool = False) -> pl.Expr:
    """How a reason names an item (columns title, brand, category): its title; else its brand and the
    leaf of its category ("Samsung Smartphones"); else either alone (the whole category path with
    ``whole_category``); null when the catalog has none of them (an item id means nothing to a
    shopper: the reason then says something else). The report names items the same way."""
    leaf = pl.when(_blank_null("category").is_not_null()).then(_leaf("category"))
    return pl.coalesce(
        _blank_null("title"),
        pl.when(_blank_null("brand").is_not_null() & leaf.is_not_null()).then(
            pl.concat_str(_blank_null("brand"), leaf, separator=separator)
        ),
        _blank_null("brand"),
        _blank_null("category") if whole_category else leaf,
    )


def reasons(recs: pl.DataFrame, recent: pl.DataFrame, served: Served, catalog: pl.DataFrame) -> pl.DataFrame:
    """``recs`` (user_id, item_id, sources, …) with ``reason`` added; ``recent`` = user_id, item_id,
    back (1 = the latest), event_type of the visitors' recent item events."""
    from recctl.serving.served import items_of

    cat = items_of(catalog, pl.concat([recs["item_id"], recent["item_id"]])).select(
        "item_id", "title", "brand", "category", "price"
    )
    kinds = {s["name"]: (s["kind"], (s.get("params") or {}).get("mode", "sequential")) for s in served.specs}
    base = recs.with_columns(
        _src=pl.col("sources").list.first() if "sources" in recs.columns else pl.lit(None, pl.String)
    ).with_columns(
        _kind=pl.col("_src").replace_strict({k: v[0] for k, v in kinds.items()}, default=None),
        _mode=pl.col("_src").replace_strict({k: v[1] for k, v in kinds.items()}, default=None),
    )
    anchors = _anchors(base, recent, served, kinds)
    titles = cat.select(_anchor="item_id", _anchor_title=label())
    anchors = anchors.join(titles, on="_anchor", how="left").select(
        "user_id", "item_id", _anchor="_anchor_title"
    )  # null when the anchor has neither title, brand nor category: another reason is given
    prof = _profiles(recent, cat)
    out = (
        base.join(anchors, on=["user_id", "item_id"], how="left")
        .join(
            cat.rename({"title": "_title", "brand": "_brand", "category": "_cat", "price": "_price"}),
            on="item_id",
            how="left",
        )
        .join(prof, on="user_id", how="left")
    )
    mine = pl.col("_brands").list.contains(pl.col("_brand")).fill_null(False)
    in_band = ((pl.col("_price") - pl.col("_u_price")).abs() <= PRICE_BAND).fill_null(False)
    taste = (
        pl.when(mine)
        .then(pl.format("your brand {}", pl.col("_brand")))
        .when(in_band)
        .then(pl.lit("in your usual price range"))
        .when(pl.col("_cat").is_not_null() & pl.col("_cat").is_in(pl.col("_cats")).fill_null(False))
        .then(pl.format("in {}, which you browse", _leaf("_cat")))
    )
    reason = (
        pl.when(pl.col("_src").is_null())
        .then(pl.lit("featured"))
        .when(pl.col("_kind") == "popular")
        .then(
            pl.when(pl.col("_cat").is_not_null())
            .then(pl.format("trending in {}", _leaf("_cat")))
            .otherwise(pl.lit("trending now"))
        )
        .when((pl.col("_kind") == "cooccur") & pl.col("_anchor").is_not_null())
        .then(
            pl.format(
                "{} {}",
                pl.col("_mode").replace_strict(_PHRASE, default="often viewed with"),
                pl.col("_anchor"),
            )
        )
        .when((pl.col("_kind") != "affinity") & pl.col("_anchor").is_not_null())
        .then(pl.format("because you viewed {}", pl.col("_anchor")))
        .otherwise(pl.coalesce(taste, pl.lit("picked for you from your recent activity")))
    )
    return out.with_columns(reason=reason).select(*recs.columns, "reason")


def _anchors(
    base: pl.DataFrame, recent: pl.DataFrame, served: Served, kinds: dict[str, tuple[str, str]]
) -> pl.DataFrame:
    """user_id, item_id, _anchor (the title of the recent item the first source relates most to it)."""
    parts = []
    for name in base["_src"].drop_nulls().unique().sort().to_list():
        if kinds.get(name, ("", ""))[0] in ("popular", "affinity", "random"):
            continue
        gen: Any = served.generator(name)
        if not hasattr(gen, "for_items"):
            continue
        mine = base.filter(pl.col("_src") == name).select("user_id", "item_id")
        rec = recent.join(mine.select("user_id").unique(), on="user_id", how="semi")
        if rec.height == 0:
            continue
        pairs = mine.join(rec.select("user_id", anchor_id="item_id", back="back"), on="user_id")
        if isinstance(gen, PairScorer):  # score just these pairs: no ranking over the catalog
            scored = pairs.with_columns(rel=pl.Series(gen.pair_scores(pairs["anchor_id"], pairs["item_id"])))
        else:
            rel = gen.for_items(rec["item_id"].unique(), ANCHOR_N).select(
                anchor_id="item_id", item_id="related_id", rel="score"
            )
            scored = pairs.join(rel, on=["anchor_id", "item_id"])
        parts.append(
            # a negative relation (EASE weights can be) is no reason "because you viewed" it
            scored.filter(pl.col("rel").is_not_nan() & (pl.col("rel") > 1e-6))
            .with_columns(w=pl.col("rel") * RECENCY ** (pl.col("back") - 1))
            .sort("w", descending=True)
            .unique(["user_id", "item_id"], keep="first")
            .select("user_id", "item_id", "anchor_id")
        )
    if not parts:
        return pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String, "_anchor": pl.String})
    return pl.concat(parts).select("user_id", "item_id", _anchor="anchor_id")


def _profiles(recent: pl.DataFrame, cat: pl.DataFrame) -> pl.DataFrame:
    """Per visitor: _brands (brands with >= BRAND_SHARE of their item events), _u_price (median price
    of the items they touched), _cats (the categories they touched)."""
    ev = recent.select("user_id", "item_id").join(cat, on="item_id", how="left")
    brands = (
        ev.filter(pl.col("brand").is_not_null())
        .group_by("user_id", "brand")
        .len()
        .with_columns(share=pl.col("len") / pl.col("len").sum().over("user_id"))
        .filter(pl.col("share") >= BRAND_SHARE)
        .group_by("user_id")
        .agg(_brands=pl.col("brand"))
    )
    rest = ev.group_by("user_id").agg(
        _u_price=pl.col("price").median(), _cats=pl.col("category").drop_nulls().unique()
    )
    return rest.join(brands, on="user_id", how="left")
