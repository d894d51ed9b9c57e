"""Synthetic fashion-shop export: ``events.csv.gz``, ``items.ndjson``, ``users.csv``, ``ground_truth.json``.

The files mimic a raw shop export (the shop's own column names and action vocabulary); the planted
structure that models should recover is written to ``ground_truth.json``: ``brand_loyal``, ``price_band``,
``discount_hunters``, ``sequences`` (a -> b next views), ``trending``, ``new_visitors``,
``category_affinity`` (``recctl.sample.behaviour``) and ``consumable_habits`` (re-buys of a care item on
a cycle, ``recctl.sample.habits``), with ``meta`` (window, tiers, the consumable categories, counts).
Output is a pure function of ``seed`` and the size arguments: same arguments, byte-identical files.

Each part draws from its own child of the seed, the care range and its sessions from the last two: the
fashion items keep their skus (the care range is numbered after them) and the fashion stream its events.
"""

from __future__ import annotations

import gzip
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recctl.sample.behaviour import (
    AFFINE,
    LOYAL,
    WINDOW,
    Stream,
    Users,
    make_stream,
    make_users,
)
from recctl.sample.catalog import (
    ALL_LEAVES,
    AUDIENCE,
    BRANDS,
    CARE_LEAVES,
    CARE_PRICE,
    DAY,
    LEAVES,
    TIER_NAMES,
    Catalog,
    IntArr,
    Planted,
    StrArr,
    concat,
    item_texts,
    make_care,
    make_catalog,
    plant,
)
from recctl.sample.habits import Habits, make_habits

ACTIONS = ("search", "pageview", "addtocart", "purchase")
PAGES = ("home", "product", "category", "search", "cart")
CITIES = (
    "New York",
    "Los Angeles",
    "Chicago",
    "Houston",
    "Phoenix",
    "Philadelphia",
    "San Diego",
    "Dallas",
    "Austin",
    "Seattle",
    "Boston",
    "Denver",
    "Miami",
    "Atlanta",
)
CITY_P = np.array([14, 10, 8, 6, 4, 4, 4, 5, 5, 6, 6, 4, 5, 5], dtype=float)
AGE_GROUPS = ("18-24", "25-34", "35-44", "45-54", "55+")
ISO = "%Y-%m-%dT%H:%M:%SZ"
CARE_SHARE = 0.02  # size of the care range relative to the fashion catalogue


def _iso(t: IntArr) -> list[str]:
    return [s + "Z" for s in np.datetime_as_string(t.astype("datetime64[s]"), unit="s").tolist()]


def _dense_rank(keys: list[IntArr], mask: IntArr) -> IntArr:
    """Rank (0..) of the rows in ``mask`` ordered lexicographically by ``keys`` (last key primary)."""
    order = np.lexsort([k[mask] for k in keys])
    rank = np.full(keys[0].size, -1, dtype=np.int64)
    rank[mask[order]] = np.arange(mask.size)
    return rank


Pages = tuple[IntArr, IntArr, StrArr]  # per view, per add-to-cart, per search: page codes and the query


def _pages(rng: np.random.Generator, cat: Catalog, st: Stream) -> Pages:
    """The random text of a stream: the page of each view and add-to-cart, the query of each search."""
    m, srch = st.t_view.size, np.flatnonzero(st.has_search)
    draw = rng.random(m)
    view_page = np.select(
        [st.followed, st.has_search, st.pos == 0, draw < 0.5, draw < 0.85],
        [1, 3, np.where(draw < 0.45, 0, 2), 2, 1],
        0,
    )
    cart_page = np.where(rng.random(int(st.cart.sum())) < 0.85, 1, 2)
    q_item = st.item[srch]
    templates = rng.choice(5, size=srch.size, p=[0.3, 0.25, 0.15, 0.15, 0.15])
    leafname = np.array([lf.name.lower() for lf in ALL_LEAVES])[cat.leaf[q_item]]
    prefix = np.select(
        [templates == 0, templates == 1, templates == 2, templates == 3],
        [
            cat.color[q_item],
            np.array([b.name.lower() for b in BRANDS])[cat.brand[q_item]],
            np.full(srch.size, ""),
            cat.material[q_item],
        ],
        np.array(AUDIENCE)[cat.root[q_item]],
    )
    return view_page, cart_page, np.char.strip(np.char.add(np.char.add(prefix, " "), leafname))


def _events(cat: Catalog, parts: list[tuple[Stream, Pages]], end: int) -> pl.DataFrame:
    """The event rows of the streams (sessions and orders numbered over all of them), sorted by time."""
    st = parts[0][0]
    for other, _ in parts[1:]:
        st = st.concat(other)
    view_page, cart_page, query = (np.concatenate([p[i] for _, p in parts]) for i in range(3))
    m = st.t_view.size
    srch, view = np.flatnonzero(st.has_search), np.arange(m)
    crt, buy = np.flatnonzero(st.cart), np.flatnonzero(st.buy)
    bought: IntArr = np.cumsum(st.buy) - st.buy
    first_slot = np.cumsum(np.bincount(st.slot_session, minlength=st.sess_user.size)) - np.bincount(
        st.slot_session, minlength=st.sess_user.size
    )
    rank: IntArr = bought - bought[first_slot[st.slot_session]]
    t_buy = st.sess_checkout[st.slot_session[buy]] + rank[buy]

    slot = np.concatenate([srch, view, crt, buy])
    kind = np.repeat(np.arange(4), [srch.size, m, crt.size, buy.size])
    t = np.concatenate([st.t_search[srch], st.t_view, st.t_cart[crt], t_buy])
    keep = np.flatnonzero(t < end)
    query_col = np.concatenate([query, np.full(t.size - srch.size, "")])[keep]  # search rows come first
    slot, kind, t = slot[keep], kind[keep], t[keep]
    item = np.where(kind == 0, -1, st.item[slot])
    sess = st.slot_session[slot]
    sess_no = _dense_rank([st.sess_user, st.sess_start], np.unique(sess))[sess]
    order_no = _dense_rank([st.sess_user, st.sess_checkout], np.unique(sess[kind == 3]))[sess]
    page = np.concatenate([np.full(srch.size, 3), view_page, cart_page, np.full(buy.size, 4)])[keep]

    df = pl.DataFrame(
        {
            "t": t,
            "user": st.slot_user[slot],
            "sess_no": sess_no,
            "item": item,
            "kind": kind,
            "price": np.where(item >= 0, cat.price[np.maximum(item, 0)], 0),
            "order_no": order_no,
            "query": query_col,
            "action": np.array(ACTIONS)[kind],
            "page": np.array(PAGES)[page],
            "slot": slot,
        }
    )
    c = pl.col
    has_item = c.item >= 0
    return df.sort(["t", "user", "kind", "slot"]).select(
        event_time=pl.from_epoch("t", time_unit="s").dt.strftime(ISO),
        visitor_id=pl.format("u{}", c.user.cast(pl.String).str.zfill(5)),
        session=pl.format("s{}", c.sess_no.cast(pl.String).str.zfill(6)),
        product_id=pl.when(has_item).then(pl.format("p{}", c.item.cast(pl.String).str.zfill(4))),
        action=c.action,
        price=pl.when(has_item).then(
            pl.format("{}.{}", c.price // 100, (c.price % 100).cast(pl.String).str.zfill(2))
        ),
        search_query=pl.when(c.kind == 0).then(c.query),
        page=c.page,
        order_id=pl.when(c.kind == 3).then(pl.format("o{}", c.order_no.cast(pl.String).str.zfill(6))),
        user=c.user,
        t=c.t,
    )


def _items_ndjson(cat: Catalog) -> str:
    texts = item_texts(cat)
    created, updated = _iso(cat.created), _iso(cat.updated)
    lines = []
    for i in range(cat.n):  # one line per catalogue item (not per event)
        lf = ALL_LEAVES[int(cat.leaf[i])]
        rating = float(cat.rating[i])
        lines.append(
            json.dumps(
                {
                    "sku": f"p{i:04d}",
                    "name": texts["name"][i],
                    "description": texts["description"][i],
                    "brand": BRANDS[int(cat.brand[i])].name,
                    "category": lf.path,
                    "price": int(cat.price[i]) / 100,
                    "list_price": int(cat.list_price[i]) / 100,
                    "gender": str(cat.gender[i]),
                    "attributes": {
                        "color": str(cat.color[i]),
                        "material": str(cat.material[i]),
                        "style": str(cat.style[i]),
                        "season": str(cat.season[i]),
                    },
                    "rating": None if math.isnan(rating) else rating,
                    "reviews": int(cat.reviews[i]),
                    "likes": int(cat.likes[i]),
                    "in_stock": bool(cat.in_stock[i]),
                    "created": created[i],
                    "updated": updated[i],
                },
                ensure_ascii=False,
            )
        )
    return "\n".join(lines) + "\n"


def _users_csv(rng: np.random.Generator, users: Users, events: pl.DataFrame) -> pl.DataFrame:
    span = events.group_by("user").agg(first=pl.col("t").min(), last=pl.col("t").max()).sort("user")
    uid = span["user"].to_numpy()
    first, last = span["first"].to_numpy() // DAY, span["last"].to_numpy() // DAY
    n = uid.size
    signed = rng.random(n) < np.where(users.new[uid], 0.3, 0.75)
    before = rng.random(n) < 0.6
    signup = np.where(
        before, first - rng.integers(1, 700, size=n), first + (rng.random(n) * (last - first + 1)).astype(int)
    )
    signup = np.where(users.new[uid], first, signup)
    root = users.root[uid]
    gender = np.where(
        root == 0,
        rng.choice(3, size=n, p=[0.88, 0.07, 0.05]),
        np.where(
            root == 1,
            rng.choice(3, size=n, p=[0.07, 0.88, 0.05]),
            rng.choice(3, size=n, p=[0.55, 0.40, 0.05]),
        ),
    )
    age = np.minimum(
        rng.choice(5, size=n, p=[0.18, 0.32, 0.24, 0.15, 0.11]) + (users.centre[uid] > 150_00), 4
    )
    df = pl.DataFrame(
        {
            "customer_id": [f"u{u:05d}" for u in uid],
            "gender": np.array(["female", "male", "unknown"])[gender],
            "age_group": np.array(AGE_GROUPS)[age],
            "city": np.array(CITIES)[rng.choice(len(CITIES), size=n, p=CITY_P / CITY_P.sum())],
            "device": np.array(["mobile", "desktop", "tablet"])[rng.choice(3, size=n, p=[0.6, 0.32, 0.08])],
            "signup_date": np.datetime_as_string((signup * DAY).astype("datetime64[s]"), unit="D"),
        }
    )
    return df.filter(pl.Series(signed))


def _ground_truth(
    cat: Catalog, users: Users, planted: Planted, habits: Habits, events: pl.DataFrame, meta: dict[str, Any]
) -> dict[str, Any]:
    active = np.sort(events.filter(pl.col("product_id").is_not_null())["user"].unique().to_numpy())
    uid = {int(u): f"u{int(u):05d}" for u in active}
    lo = np.maximum(users.centre - WINDOW, 0) / 100
    hi = (users.centre + WINDOW) / 100
    last = _iso(habits.last)
    return {
        "brand_loyal": {uid[u]: BRANDS[int(users.brand[u])].name for u in uid if users.kind[u] == LOYAL},
        "price_band": {uid[u]: [float(lo[u]), float(hi[u])] for u in uid},
        "discount_hunters": [uid[u] for u in uid if users.hunter[u]],
        "sequences": [[f"p{a:04d}", f"p{b:04d}"] for a, b in planted.pairs.tolist()],
        "trending": [f"p{i:04d}" for i in planted.trending.tolist()],
        "new_visitors": [uid[u] for u in uid if users.new[u]],
        "category_affinity": {
            uid[u]: LEAVES[int(users.leaf[u])].path for u in uid if users.kind[u] == AFFINE
        },
        "consumable_habits": {
            uid[u]: {
                "item_id": f"p{i:04d}",
                "also_item_ids": [f"p{a:04d}"] if a >= 0 else [],
                "every_days": e,
                "last_purchase": last[j],
                "due_at_end": d,
            }
            for j, (u, i, a, e, d) in enumerate(
                zip(
                    habits.user.tolist(),
                    habits.item.tolist(),
                    habits.also.tolist(),
                    habits.every.tolist(),
                    habits.due.tolist(),
                    strict=True,
                )
            )
        },
        "meta": meta,
    }


def generate(
    out_dir: Path,
    *,
    seed: int = 42,
    n_users: int = 2000,
    n_items: int = 1500,
    days: int = 90,
    end: datetime = datetime(2026, 9, 30, tzinfo=UTC),
) -> dict[str, int]:
    """Write the synthetic shop export to ``out_dir`` and return a summary of counts."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # one generator per part; the care range and the habits come last, so the older parts stay as they were
    rng_cat, rng_users, rng_events, rng_text, rng_care, rng_habits = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)
    )
    end_ts = int(end.timestamp())
    start_ts = end_ts - days * DAY
    cat = make_catalog(rng_cat, n_items, start_ts, end_ts)
    planted = plant(rng_cat, cat, start_ts)
    users = make_users(rng_users, cat, n_users)
    stream = make_stream(rng_events, cat, users, planted, start_ts, end_ts)
    pages = _pages(rng_text, cat, stream)
    cat = concat(
        cat, make_care(rng_care, max(len(CARE_LEAVES), round(n_items * CARE_SHARE)), start_ts, end_ts)
    )
    care_stream, habits = make_habits(rng_habits, cat, users, stream, start_ts, end_ts)
    events = _events(cat, [(stream, pages), (care_stream, _pages(rng_habits, cat, care_stream))], end_ts)
    users_df = _users_csv(rng_text, users, events)

    csv = events.drop("user", "t").write_csv(null_value="")
    (out_dir / "events.csv.gz").write_bytes(gzip.compress(csv.encode(), compresslevel=9, mtime=0))
    (out_dir / "items.ndjson").write_text(_items_ndjson(cat), encoding="utf-8")
    (out_dir / "users.csv").write_text(users_df.write_csv(), encoding="utf-8")

    actions = events["action"].value_counts()
    summary = {
        "visitors": events["user"].n_unique(),
        "signed_up_users": users_df.height,
        "items": cat.n,
        "events": events.height,
        "sessions": events["session"].n_unique(),
        "orders": events["order_id"].n_unique() - int(events["order_id"].null_count() > 0),
        **{a: int(actions.filter(pl.col("action") == a)["count"].sum()) for a in ACTIONS},
        "brand_loyal": 0,
        "discount_hunters": 0,
        "new_visitors": 0,
        "category_affinity": 0,
        "sequences": int(planted.pairs.shape[0]),
        "trending": int(planted.trending.size),
        "care_items": int(np.sum(cat.leaf >= len(LEAVES))),
        "consumable_habits": int(habits.user.size),
        "consumable_due": int(habits.due.sum()),
    }
    meta: dict[str, Any] = {
        "seed": seed,
        "start": _iso(np.array([start_ts]))[0],
        "end": _iso(np.array([end_ts]))[0],
        "days": days,
        "price_band_half_width": WINDOW / 100,
        "tiers": {b.name: TIER_NAMES[b.tier] for b in BRANDS},
        "consumable_categories": [lf.path for lf in CARE_LEAVES],
        "consumable_price_range": [float(CARE_PRICE[0]), float(CARE_PRICE[1])],
        "consumable_due_rule": "days from last_purchase to end >= every_days - 1",
    }
    truth = _ground_truth(cat, users, planted, habits, events, meta)
    for key in ("brand_loyal", "discount_hunters", "new_visitors", "category_affinity"):
        summary[key] = len(truth[key])
    meta["counts"] = dict(summary)
    (out_dir / "ground_truth.json").write_text(
        json.dumps(truth, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return summary
