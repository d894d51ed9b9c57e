"""``pair_features``: the user, item, user×item (``ui_*``) and context (``ctx_*``) features of given pairs.

Pairs keep their order, length and extra columns. A user unknown to the FeatureSet (no event before
as_of) gets null ``u_*`` and ``ui_*`` features, an unknown item null ``i_*``; a known user's untouched
item, brand or category counts 0. Category affinity counts path prefixes: a user into
"women > shoes > boots" has a share of "women > shoes", so a sandal of "women > shoes > sandals" matches
at depth 2 (``ui_cat_match_depth``) with ``ui_cat_parent_share`` > 0.

The context is a frame (user_id, page, current_item_id) given at serving time (one row per user; the
last wins; a user without a row is on the home page); when it is not given, each user's last event
before as_of is the context (its page, else the page its type implies; no events: home).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from recctl.features.base import PAGES, Feature, FeatureSet, ensure_columns, select_list, session

if TYPE_CHECKING:
    from recctl.features.saved import StoredFeatures

_K = "u.user_id IS NOT NULL"  # the user has events before as_of
_KB = f"{_K} AND ia.brand IS NOT NULL"
_KC = f"{_K} AND ia.category IS NOT NULL"
_NEAR = "u.u_price_median > 0 AND ia.price IS NOT NULL"
_USER_COLUMNS = ("u_price_p25", "u_price_median", "u_price_p75", "u_discount_sensitivity")  # used by ui_*

PAIR_FEATURES: tuple[Feature, ...] = (
    Feature("ui_n_event", f"CASE WHEN {_K} THEN coalesce(ui.n_event, 0) END", "the user's events on the item", "count"),
    Feature("ui_n_view", f"CASE WHEN {_K} THEN coalesce(ui.n_view, 0) END", "times the user viewed the item", "count"),
    Feature("ui_n_cart", f"CASE WHEN {_K} THEN coalesce(ui.n_cart, 0) END", "times the user carted the item", "count"),
    Feature("ui_n_purchase", f"CASE WHEN {_K} THEN coalesce(ui.n_purchase, 0) END", "times the user bought the item",
            "count"),
    Feature("ui_days_since_item", "days_before(ui.last_ts)", "days since the user last touched the item"),
    Feature("ui_brand_share", f"CASE WHEN {_KB} THEN coalesce(ub.share, 0) END",
            "the item's brand's share of the user's weighted events"),
    Feature("ui_brand_lift", f"CASE WHEN {_KB} THEN coalesce(ub.lift, 0) END",
            "that share over the brand's share of all users' events"),
    Feature("ui_brand_n_purchase", f"CASE WHEN {_KB} THEN coalesce(ub.n_purchase, 0) END",
            "the user's purchases of the item's brand", "count"),
    Feature("ui_days_since_brand", "days_before(ub.last_ts)", "days since the user last touched the item's brand"),
    Feature("ui_cat_share", f"CASE WHEN {_KC} THEN coalesce(cm.leaf_share, 0) END",
            "the item's (leaf) category's share of the user's weighted events"),
    Feature("ui_cat_parent_share", f"CASE WHEN {_KC} AND ia.depth > 1 THEN coalesce(cm.parent_share, 0) END",
            "share of the item's parent category (prefix one level up)"),
    Feature("ui_cat_lift", f"CASE WHEN {_KC} THEN coalesce(cm.leaf_lift, 0) END",
            "leaf-category share over its share of all users' events"),
    Feature("ui_cat_match_depth", f"CASE WHEN {_KC} THEN coalesce(cm.match_depth, 0) END",
            "levels of the item's category path the user touched (deepest prefix; 0 none)", "count"),
    Feature("ui_cat_match_share", f"CASE WHEN {_KC} THEN coalesce(cm.match_share, 0) END",
            "the user's share of that deepest touched prefix"),
    Feature("ui_days_since_category", "days_before(cm.leaf_last)",
            "days since the user last touched the item's category"),
    Feature("ui_price_log_ratio", f"CASE WHEN {_NEAR} AND ia.price > 0 THEN ln(ia.price / u.u_price_median) END",
            "ln(item price / the user's median price)"),
    Feature("ui_price_band_dist",
            f"CASE WHEN {_NEAR} THEN CASE WHEN ia.price < u.u_price_p25 THEN (u.u_price_p25 - ia.price) "
            "WHEN ia.price > u.u_price_p75 THEN (ia.price - u.u_price_p75) ELSE 0 END / u.u_price_median END",
            "distance of the price outside the user's p25–p75 band, in units of their median (0 inside)"),
    Feature("ui_discount_x_sensitivity", "ia.discount_pct * u.u_discount_sensitivity",
            "the item's discount % × the user's discount sensitivity"),
)  # fmt: skip

#: Repeat purchases (the repurchase-cycle model of recctl.candidates._cycles over the user's purchase
#: occasions: orders, else sessions, else days): what lets the ranker tell a due staple from a one-off.
#: ``u_repeat_share`` and ``i_cycle_days`` are columns of the user and item tables (``build.cycles``).
REPEAT_USER_FEATURES: tuple[Feature, ...] = (
    Feature(
        "u_repeat_share", "u.u_repeat_share", "share of the user's purchase occasions that re-bought an item"
    ),
)
REPEAT_ITEM_FEATURES: tuple[Feature, ...] = (
    Feature(
        "i_cycle_days", "ia.cycle_days", "the item's repurchase cycle in days (backed off to its category)"
    ),
)
REPEAT_FEATURES: tuple[Feature, ...] = (
    Feature("ui_n_baskets", f"CASE WHEN {_K} THEN coalesce(ui.n_baskets, 0) END",
            "purchase occasions (orders, else sessions, else days) of the item by the user", "count"),
    Feature("ui_days_since_purchase", "cy.days_since", "days since the user last bought the item"),
    Feature("ui_cycle_days", f"CASE WHEN {_K} THEN coalesce(cy.cycle_days, ia.cycle_days) END",
            "days between repurchases: the user's own gaps blended with the item's, else the item's"),
    Feature("ui_due_ratio", "cy.due_ratio", "days since the user last bought it / the user's cycle"),
    Feature("ui_due_score", "cy.due_score", "how due the item is now, 0..1 (1 = exactly one cycle ago)"),
)  # fmt: skip

CTX_FEATURES: tuple[Feature, ...] = (
    *(Feature(f"ctx_page_{p}", f"coalesce(c.page, 'home') = '{p}'", f"1 when the user is on a {p} page", "flag") for p in PAGES),
    Feature("ctx_is_current_item", "CASE WHEN c.current_item_id IS NOT NULL THEN p.item_id = c.current_item_id END",
            "1 when the candidate is the item on screen (null: no current item)", "flag"),
    Feature("ctx_same_brand", "CASE WHEN ci.brand IS NOT NULL AND ia.brand IS NOT NULL THEN ia.brand = ci.brand END",
            "1 when the candidate has the current item's brand", "flag"),
    Feature("ctx_same_category",
            "CASE WHEN ci.category IS NOT NULL AND ia.category IS NOT NULL THEN ia.category = ci.category END",
            "1 when the candidate is in the current item's (leaf) category", "flag"),
    Feature("ctx_shared_category_depth",
            "CASE WHEN ci.category IS NOT NULL AND ia.category IS NOT NULL "
            "THEN coalesce(cx.shared_depth, 0) END",
            "levels of category path shared with the current item", "count"),
    Feature("ctx_price_ratio", "ia.price / nullif(ci.price, 0)", "candidate price / current item price"),
)  # fmt: skip

#: Category prefix matches, as separate statements: pairs × the candidate's path prefixes first (a few rows
#: per pair; in one query the optimizer joined the prefixes with every user's categories first, hundreds of
#: millions of rows), then the deepest prefix the user touched with the leaf / parent shares (cm) and the
#: levels shared with the current item's path (cx).
_CATEGORY_MATCH = (
    """CREATE TEMP TABLE pc AS
SELECT p.__row, p.user_id, x.category, x.lvl, x.n
FROM p JOIN (SELECT item_id, depth AS n, unnest(prefixes) AS category, generate_subscripts(prefixes, 1) AS lvl
             FROM item_attrs) x ON x.item_id = p.item_id""",
    """CREATE TEMP TABLE cm AS
SELECT pc.__row, max(pc.lvl) AS match_depth, arg_max(uc.share, pc.lvl) AS match_share,
  max(uc.share) FILTER (WHERE pc.lvl = pc.n) AS leaf_share,
  max(uc.share) FILTER (WHERE pc.lvl = pc.n - 1) AS parent_share,
  max(uc.lift) FILTER (WHERE pc.lvl = pc.n) AS leaf_lift,
  max(uc.last_ts) FILTER (WHERE pc.lvl = pc.n) AS leaf_last
FROM pc JOIN user_category uc ON uc.user_id = pc.user_id AND uc.category = pc.category
GROUP BY pc.__row""",
    """CREATE TEMP TABLE cx AS
SELECT pc.__row, max(pc.lvl) AS shared_depth
FROM pc JOIN ctx c ON c.user_id = pc.user_id JOIN item_attrs ci ON ci.item_id = c.current_item_id
WHERE list_contains(ci.prefixes, pc.category)
GROUP BY pc.__row""",
)


def _context(fs: FeatureSet, context: pl.DataFrame | None) -> pl.DataFrame:
    """One row per user: user_id, page (normalized), current_item_id."""
    if context is None:
        return fs.user_last.select("user_id", "page", current_item_id=pl.col("item_id"))
    ctx = ensure_columns(
        context, {"user_id": pl.String(), "page": pl.String(), "current_item_id": pl.String()}
    )
    page = pl.col("page").str.strip_chars().str.to_lowercase()
    page = pl.when(page.is_in(PAGES)).then(page).when(page.is_null() | (page == "")).then(pl.lit("home"))
    return (
        ctx.with_columns(page=page.otherwise(pl.lit("other")))
        .filter(pl.col("user_id").is_not_null())
        .unique("user_id", keep="last", maintain_order=True)
    )


def _with_nulls(frame: pl.DataFrame, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """``frame`` with the missing ones of ``columns`` added as nulls (feature sets saved before them)."""
    return frame.with_columns(pl.lit(None, t).alias(c) for c, t in columns.items() if c not in frame.columns)


def _repeat_frames(fs: FeatureSet, keys: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """``cy``: the bought ones of the pairs ``keys`` with their due figures as of ``fs.as_of`` (feature
    sets saved before the cycles existed get none: null features)."""
    from recctl.candidates._cycles import due

    ui = _with_nulls(fs.user_item, {"n_baskets": pl.Int64(), "last_buy_ts": pl.Datetime("us"),
                                    "cycle_days": pl.Float64(), "cycle_sigma": pl.Float64()})  # fmt: skip
    bought = ui.join(keys.select("user_id", "item_id"), on=["user_id", "item_id"], how="semi")
    bought = bought.filter(pl.col("last_buy_ts").is_not_null()).select(
        "user_id", "item_id", last_ts="last_buy_ts", cycle_days="cycle_days", log_sigma="cycle_sigma"
    )
    cy = due(bought, fs.as_of).select(
        "user_id", "item_id", "days_since", "cycle_days", "due_ratio", "due_score"
    )
    return {"cy": cy}


def pair_features(
    fs: FeatureSet | StoredFeatures, pairs: pl.DataFrame, context: pl.DataFrame | None = None
) -> pl.DataFrame:
    """``pairs`` (user_id, item_id, any other columns) in the same order with every ``u_*``, ``i_*``,
    ``ui_*`` and ``ctx_*`` feature joined (columns of ``pairs`` with those names are replaced)."""
    keys = pairs.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)).with_row_index(
        "__row"
    )
    fs = fs.of_users(keys["user_id"])  # a chunk of users joins its own rows, not every user's
    frames = {
        "p": keys,
        "u": fs.user.select("user_id", *_USER_COLUMNS),
        "item_attrs": _with_nulls(fs.item_attrs, {"cycle_days": pl.Float64(), "cycle_sigma": pl.Float64()}),
        "user_item": _with_nulls(fs.user_item, {"n_baskets": pl.Int64()}),
        "user_brand": fs.user_brand,
        "user_category": fs.user_category,
        "ctx": _context(fs, context),
        **_repeat_frames(fs, keys),
    }
    sql = f"""
SELECT p.__row,
  {select_list([*PAIR_FEATURES, *REPEAT_FEATURES, *CTX_FEATURES])}
FROM p
LEFT JOIN u ON u.user_id = p.user_id
LEFT JOIN item_attrs ia ON ia.item_id = p.item_id
LEFT JOIN user_item ui ON ui.user_id = p.user_id AND ui.item_id = p.item_id
LEFT JOIN user_brand ub ON ub.user_id = p.user_id AND ub.brand = ia.brand
LEFT JOIN cy ON cy.user_id = p.user_id AND cy.item_id = p.item_id
LEFT JOIN cm ON cm.__row = p.__row
LEFT JOIN cx ON cx.__row = p.__row
LEFT JOIN ctx c ON c.user_id = p.user_id
LEFT JOIN item_attrs ci ON ci.item_id = c.current_item_id
ORDER BY p.__row"""
    with session(fs.as_of, frames) as con:
        for statement in _CATEGORY_MATCH:
            con.execute(statement)
        pair: pl.DataFrame = con.sql(sql).pl().drop("__row")
    # the plain user and item columns are gathered by polars (5x faster than through DuckDB's result)
    user = keys.select("user_id").join(fs.user, on="user_id", how="left", maintain_order="left")
    item = keys.select("item_id").join(fs.item, on="item_id", how="left", maintain_order="left")
    feats = [*user.drop("user_id").get_columns(), *item.drop("item_id").get_columns(), *pair.get_columns()]
    names = {f.name for f in feats}
    return pairs.drop([c for c in pairs.columns if c in names]).hstack(feats)
