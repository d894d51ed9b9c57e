"""Explanations: the anchor of "because you viewed <title>" and the reasons of every kind of source."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest

from recctl.candidates.base import PairScorer, build
from recctl.serving.explain import reasons
from recctl.serving.session import RECENCY
from tests.contract import tiny_catalog, tiny_shop


class FakeServed:
    """What ``reasons`` needs of a promoted run: its specs and its generators by name."""

    def __init__(self, gens: dict[str, Any], modes: dict[str, str] | None = None) -> None:
        self.gens = gens
        self.specs = [
            {"name": n, "kind": g.kind, "params": {"mode": (modes or {}).get(n, "sequential")}}
            for n, g in gens.items()
        ]

    def generator(self, name: str) -> Any:
        return self.gens[name]


class ForItemsOnly:
    """A generator with its ``pair_scores`` hidden: explanations rank its ``for_items`` instead."""

    def __init__(self, gen: Any) -> None:
        self.gen, self.kind, self.name = gen, gen.kind, gen.name

    def for_items(self, items: pl.Series, n: int) -> pl.DataFrame:
        return self.gen.for_items(items, n)


def fitted(kind: str, params: dict[str, Any] | None = None) -> Any:
    gen = build(kind, kind, params or {})
    gen.fit(tiny_shop(), seed=3, items=tiny_catalog())
    return gen


@pytest.fixture(scope="module")
def gens() -> dict[str, Any]:
    return {k: fitted(k) for k in ("content", "ease", "ials")} | {
        "together": fitted("cooccur", {"mode": "session"}),
        "trending": fitted("popular"),
        "affinity": fitted("affinity"),
    }


def recent(rows: dict[str, list[str]]) -> pl.DataFrame:
    """Each user's recent items, the latest first."""
    return pl.DataFrame(
        [(u, i, b + 1, "view") for u, items in rows.items() for b, i in enumerate(items)],
        schema={"user_id": pl.String, "item_id": pl.String, "back": pl.Int64, "event_type": pl.String},
        orient="row",
    )


def recs(rows: list[tuple[str, str, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [u for u, _, _ in rows],
            "item_id": [i for _, i, _ in rows],
            "sources": [[s] if s else [] for _, _, s in rows],
        }
    )


CATALOG = tiny_catalog().sort("item_id")
TITLE = dict(zip(CATALOG["item_id"], CATALOG["title"], strict=True))


def test_the_anchor_is_the_recent_item_related_most_weighted_by_recency(gens: dict[str, Any]) -> None:
    content = gens["content"]
    assert isinstance(content, PairScorer)
    history = {"u": ["p0", "x", "a"]}  # p0 the latest, then x, then a
    out = reasons(
        recs([("u", "b", "content"), ("u", "y", "content")]), recent(history), FakeServed(gens), CATALOG
    )
    got = dict(zip(out["item_id"], out["reason"], strict=True))
    for item in ("b", "y"):  # the known answer, from the cosines themselves
        cos = content.pair_scores(pl.Series(history["u"]), pl.Series([item] * 3))
        weight = np.nan_to_num(cos) * RECENCY ** np.arange(3)
        assert got[item] == f"because you viewed {TITLE[history['u'][int(np.argmax(weight))]]}"
    # b shares its whole text with a, y with x: they win over p0 despite being older
    assert got == {"b": f"because you viewed {TITLE['a']}", "y": f"because you viewed {TITLE['x']}"}


@pytest.mark.parametrize("name", ["content", "ease", "ials"])
def test_scoring_pairs_gives_the_anchors_of_ranking_for_items(gens: dict[str, Any], name: str) -> None:
    history = {"u0": ["a", "b"], "u1": ["x", "p0", "y"], "u2": ["c", "z", "p0", "a"]}
    wanted = recs([(u, i, name) for u in history for i in ("a", "b", "c", "x", "y", "z", "p0", "new")])
    fast = reasons(wanted, recent(history), FakeServed(gens), CATALOG)
    slow = reasons(wanted, recent(history), FakeServed(gens | {name: ForItemsOnly(gens[name])}), CATALOG)
    assert fast.sort("user_id", "item_id").equals(slow.sort("user_id", "item_id"))
    assert fast["reason"].str.starts_with("because you viewed").sum() > len(history)


def test_reasons_of_each_kind_of_source(gens: dict[str, Any]) -> None:
    served = FakeServed(gens, modes={"together": "session"})
    history = {"u": ["a", "p0"]}
    out = reasons(
        recs([("u", "b", "together"), ("u", "y", "trending"), ("u", "new", "affinity"), ("u", "c", None)]),
        recent(history),
        served,
        CATALOG,
    )
    got = dict(zip(out["item_id"], out["reason"], strict=True))
    assert got["b"] == f"viewed together with {TITLE['a']}"
    assert got["y"] == "trending in Shoes"
    assert got["new"] == "your brand Acme"  # a and p0 are Acme's
    assert got["c"] == "featured"  # no source: a pinned item


class Unrelated(ForItemsOnly):
    def for_items(self, items: pl.Series, n: int) -> pl.DataFrame:
        return self.gen.for_items(pl.Series([], dtype=pl.String), n)


def test_no_related_recent_item_falls_back_to_taste(gens: dict[str, Any]) -> None:
    served = FakeServed(gens | {"content": Unrelated(gens["content"])})
    out = reasons(recs([("u", "z", "content"), ("u", "b", "content"), ("u", "x", "content")]),
                  recent({"u": ["a", "c"]}), served, CATALOG)  # fmt: skip
    got = dict(zip(out["item_id"], out["reason"], strict=True))
    assert got["b"] == "your brand Acme"
    # x: Zeta, 120 is within 100 of the user's median price (a 50, c 80); z: Zeta, 200, a category never seen
    assert got["x"] == "in your usual price range"
    assert got["z"] == "picked for you from your recent activity"
