"""Repeat purchases in evaluation: the next-basket split, the repeat variant and its repeat / explore split,
one meaning for "what is filtered" (evaluation vs the pipeline's rules), and the ranker's labels."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from recctl.config import RecctlConfig, load_config
from recctl.errors import ConfigError
from recctl.evaluate import metrics as M
from recctl.evaluate.runner import Options
from recctl.evaluate.splits import next_basket
from recctl.ranking import pipeline_spec
from recctl.ranking.dataset import label_split
from tests.conftest import ROOT, CliRunner

T0 = datetime(2024, 1, 1)
SCHEMA = {"user_id": pl.String, "item_id": pl.String, "event_type": pl.String, "ts": pl.Datetime("us"),
          "session_id": pl.String, "order_id": pl.String}  # fmt: skip


def frame(rows: list[tuple[str, str, str, datetime, str | None, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA, orient="row").sort("user_id", "ts")


def baskets() -> pl.DataFrame:
    """u1: orders o1 (milk, bread), o2 (milk, eggs) and o3 (milk, jam) three days apart; the visit of o3
    began with a view of jam. u2: one order only. u3: no order ids or sessions (days are its baskets)."""
    d = timedelta(days=1)
    return frame([
        ("u1", "milk", "purchase", T0, "s1", "o1"), ("u1", "bread", "purchase", T0, "s1", "o1"),
        ("u1", "milk", "purchase", T0 + 3 * d, "s2", "o2"), ("u1", "eggs", "purchase", T0 + 3 * d, "s2", "o2"),
        ("u1", "jam", "view", T0 + 6 * d, "s3", None),
        ("u1", "milk", "purchase", T0 + 6 * d + timedelta(minutes=5), "s3", "o3"),
        ("u1", "jam", "purchase", T0 + 6 * d + timedelta(minutes=5), "s3", "o3"),
        ("u2", "milk", "purchase", T0 + d, "s9", "o9"),
        ("u3", "tea", "purchase", T0 + d, None, None), ("u3", "tea", "purchase", T0 + 2 * d, None, None),
        ("u3", "cake", "purchase", T0 + 2 * d + timedelta(hours=1), None, None),
    ])  # fmt: skip


def test_next_basket_holds_out_each_users_last_basket() -> None:
    split = next_basket(baskets(), target_events=["purchase"])
    assert sorted(split.test.rows()) == [("u1", "jam"), ("u1", "milk"), ("u3", "cake"), ("u3", "tea")]
    u1 = split.train.filter(pl.col("user_id") == "u1")
    # the basket and the visit that led to it (the view of jam in its session) are not in training
    assert u1["ts"].max() == T0 + timedelta(days=3) and "jam" not in u1["item_id"].to_list()
    # u2 has a single basket and nothing before it: not a test user, its events stay in training
    assert (
        "u2" not in split.test["user_id"].to_list() and split.train.filter(pl.col("user_id") == "u2").height
    )
    u3 = split.train.filter(pl.col("user_id") == "u3")
    assert u3.rows() == [("u3", "tea", "purchase", T0 + timedelta(days=1), None, None)]
    assert split.info["mean_basket_size"] == pytest.approx(2.0) and split.cutoff is None
    new = next_basket(baskets(), target_events=["purchase"], variant="new-items")
    assert sorted(new.test.rows()) == [("u1", "jam"), ("u3", "cake")]  # milk and tea were bought before


def test_last_basket_labels_give_every_user_with_two_baskets_a_label() -> None:
    s = label_split(baskets(), "last-basket", "4w", ["purchase"])
    assert sorted(s.labels["user_id"].unique().to_list()) == ["u1", "u3"]
    # a temporal window of 2 days before the end only reaches u1's last order
    t = label_split(baskets(), "temporal", "2d", ["purchase"])
    assert t.labels["user_id"].unique().to_list() == ["u1"]


def test_repeat_explore_split_known_answer() -> None:
    targets = pl.DataFrame({"user_id": ["a", "a", "a", "b"], "item_id": ["x", "y", "z", "w"]})
    seen = pl.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "q"]})  # a: x, y repeats
    recs = pl.DataFrame({"user_id": ["a", "a", "a", "b"], "item_id": ["x", "z", "q", "w"],
                         "rank": [1, 2, 3, 1]})  # fmt: skip
    got = M.repeat_explore(recs, targets, seen, [1, 3])
    assert got["repeat_target_share"] == pytest.approx(0.5)
    assert got["repeat_hit_share@1"] == pytest.approx(0.5)  # hits@1: a/x (repeat), b/w (explore)
    assert got["recall_repeat@3"] == pytest.approx(0.5)  # a found x of {x, y}
    assert got["recall_explore@3"] == pytest.approx(1.0)  # a found z, b found w
    assert got["recall_explore@1"] == pytest.approx(0.5)  # a's z is at rank 2


def test_paired_lift_known_answers() -> None:
    users = [f"u{i}" for i in range(50)]
    b = pl.DataFrame({"user_id": users, "ndcg@10": [0.1 + 0.01 * (i % 7) for i in range(50)]})
    twice = b.with_columns(pl.col("ndcg@10") * 2)
    assert M.paired_lift(twice, b, "ndcg@10", n_boot=200) == pytest.approx((1.0, 1.0, 1.0))
    assert M.paired_lift(b, b, "ndcg@10", n_boot=200) == pytest.approx((0.0, 0.0, 0.0))
    noisy = b.with_columns(pl.col("ndcg@10") + pl.Series([0.05 * ((i * 13) % 5 - 2) for i in range(50)]))
    point, lo, hi = M.paired_lift(noisy, b, "ndcg@10", n_boot=500, seed=3)
    assert lo < point < hi and lo < 0.02 < hi  # the noise has mean 0: +0 % lies inside, roughly
    # pairing matters: the same per-user gain on users of very different levels is a sure lift
    wide = pl.DataFrame({"user_id": users, "ndcg@10": [float(i % 2) for i in range(50)]})
    point, lo, hi = M.paired_lift(wide.with_columns(pl.col("ndcg@10") + 0.1), wide, "ndcg@10", n_boot=500)
    assert lo > 0


def test_filter_seen_false_is_the_repeat_variant_and_new_items_cannot_have_it() -> None:
    cfg = RecctlConfig.model_validate({"evaluate": {"filter_seen": False}})
    opts = Options.from_config(cfg)
    assert (opts.variant, opts.filter_seen) == ("repeat", False)
    assert Options.from_config(RecctlConfig(), variant="repeat").filter_seen is False
    assert Options.from_config(RecctlConfig(), variant="all").filter_seen is True
    with pytest.raises(ConfigError, match="filter_seen = false means variant repeat"):
        load_config(None, environ={"RECCTL_EVALUATE__FILTER_SEEN": "false",
                                   "RECCTL_EVALUATE__VARIANT": "new-items"})  # fmt: skip
    with pytest.raises(ConfigError, match="unknown variant"):
        Options.from_config(RecctlConfig(), variant="repeats")


def test_pipeline_candidates_keep_bought_items_only_where_the_rules_let_them_back() -> None:
    shop = RecctlConfig()
    grocery = load_config(ROOT / "configs" / "grocery.toml", environ={})
    fashion = load_config(ROOT / "configs" / "fashion.toml", environ={})
    assert not grocery.rules.exclude_bought and grocery.rules.allows_repurchase()
    assert fashion.rules.exclude_bought and fashion.rules.repurchase and fashion.rules.allows_repurchase()
    assert not shop.rules.allows_repurchase()

    def seen_filtered(cfg: RecctlConfig, filter_seen: bool | None) -> bool:
        spec = pipeline_spec(cfg, filter_seen=filter_seen)
        assert spec is not None
        return bool(spec.params["filter_seen"])

    assert seen_filtered(shop, None) and seen_filtered(shop, False)  # nothing bought may come back
    assert not seen_filtered(grocery, None) and not seen_filtered(grocery, False)
    assert seen_filtered(grocery, True)  # an evaluation that filters seen items trains the same way
    assert not seen_filtered(fashion, None)  # consumables may come back: they are candidates
    assert pipeline_spec(grocery, "next-basket").params["label"] == "last-basket"  # type: ignore[union-attr]
    assert grocery.evaluate.effective_variant() == "repeat"


@pytest.fixture(scope="module")
def shop(demo_warehouse: Path) -> Path:
    return demo_warehouse


def _cfg(shop: Path, tmp_path: Path, extra: str = "") -> Path:
    f = tmp_path / "recctl.toml"
    f.write_text(
        f'runs_dir = "{tmp_path / "runs"}"\n[warehouse]\npath = "{shop / "recctl.duckdb"}"\n'
        '[[candidates]]\nname = "trending"\nkind = "popular"\nparams = { half_life_days = 7.0 }\n'
        '[[candidates]]\nname = "buy-again"\nkind = "repeat"\nparams = { neighbors = 50 }\n'
        f"[evaluate]\nn_boot = 50\n{extra}"
    )
    return f


def test_a_repeat_evaluation_with_rules_that_exclude_bought_items_is_refused(
    cli: CliRunner, shop: Path, tmp_path: Path
) -> None:
    r = cli("--config", _cfg(shop, tmp_path), "evaluate", "--variant", "repeat")
    assert r.code == 2
    assert "exclude_bought = true" in r.stderr and "could never hit one" in r.stderr
    assert "configs/grocery.toml" in r.stderr and "Traceback" not in r.stderr
    # without the pipeline nothing contradicts: the generators alone are evaluated with repeats allowed
    r = cli("--json", "--config", _cfg(shop, tmp_path), "evaluate", "--variant", "repeat",
            "--models", "buy-again,personal-top,popular")  # fmt: skip
    assert r.code == 0, r.stderr
    assert r.json["settings"]["filter_seen"] is False and "ranked" not in r.json["settings"]["filtering"]


def test_repeat_and_next_basket_evaluations_on_the_sample_shop(
    cli: CliRunner, shop: Path, tmp_path: Path
) -> None:
    f = _cfg(shop, tmp_path, "[rules]\nexclude_bought = false\n")
    r = cli("--json", "--config", f, "evaluate", "--variant", "repeat", "--report", tmp_path / "r.html")
    assert r.code == 0, r.stderr
    res = r.json
    assert res["variant"] == "repeat" and res["settings"]["filter_seen"] is False
    assert "nothing is removed" in res["settings"]["filtering"]["evaluation"]
    assert "bought items may be recommended again" in res["settings"]["filtering"]["ranked"]
    assert {"ranked", "buy-again", "personal-top", "popular"} <= set(res["models"])
    for m in res["models"].values():
        metrics = m["metrics"]
        assert 0 < metrics["repeat_target_share"] < 1
        assert 0 <= metrics["recall_repeat@10"] <= 1 and 0 <= metrics["recall_explore@10"] <= 1
    point, lo, hi = res["models"]["ranked"]["lift"]["personal-top"]["ndcg@10"]
    assert lo <= point <= hi and "lift" not in res["models"]["personal-top"]
    # personal-top only proposes repeats first: most of its hits are repeat targets
    assert res["models"]["personal-top"]["metrics"]["repeat_hit_share@10"] > 0.5
    html = (tmp_path / "r.html").read_text()
    assert "Filtered in ranked" in html and "recall_repeat" in html
    from rich.console import Console

    from recctl.cli.model import render_evaluation

    console = Console(record=True, width=200, file=io.StringIO())
    render_evaluation(res, console)
    shown = console.export_text()
    assert "repeat / explore" in shown and "filtered in evaluation: nothing is removed" in shown
    assert "ranked's ndcg@10 over (paired 95% interval): " in shown

    nb = cli("--json", "--config", f, "evaluate", "--protocol", "next-basket", "--variant", "repeat")
    assert nb.code == 0, nb.stderr
    doc = nb.json
    assert doc["protocol"] == "next-basket" and doc["data"]["mean_basket_size"] >= 1
    assert doc["data"]["test_users"] > 100
    assert (
        doc["models"]["personal-top"]["metrics"]["ndcg@10"] > doc["models"]["popular"]["metrics"]["ndcg@10"]
    )


def test_a_last_order_files_split_trains_the_ranker_on_every_users_last_basket(
    cli: CliRunner, tmp_path: Path
) -> None:
    """The second grocery data set of issue 12: a files split whose test holds each user's last order. The
    ranker's labels must come from every user's last basket, not from a 4-week window few users reach."""
    rows, test = [], []
    for u in range(40):
        for o in range(5):
            day = T0 + timedelta(days=7 * u + 9 * o)  # users shop at different times of the year
            for j in range(3):
                item = f"p{(u + o + j) % 6 if j < 2 else 6 + (u % 4)}"
                line = f"{day:%Y-%m-%dT%H:%M:%SZ},h{u},{item},purchase,o{u}-{o}\n"
                (test if o == 4 else rows).append(line)
    header = "ts,user_id,item_id,event_type,order_id\n"
    (tmp_path / "train.csv").write_text(header + "".join(rows))
    (tmp_path / "test.csv").write_text(header + "".join(test))
    cfg = tmp_path / "r.toml"
    cfg.write_text(
        "[rules]\nexclude_bought = false\n[evaluate]\nn_boot = 20\n"
        '[[candidates]]\nname = "trending"\nkind = "popular"\n'
        '[[candidates]]\nname = "buy-again"\nkind = "repeat"\nparams = { neighbors = 5 }\n'
        "[ranker]\nparams = { features = false }\n"
    )
    r = cli("--json", "--config", cfg, "--warehouse", tmp_path / "w.duckdb", "evaluate", "--protocol", "files",
            "--train", tmp_path / "train.csv", "--test", tmp_path / "test.csv", "--variant", "repeat")  # fmt: skip
    assert r.code == 0, r.stderr
    training = r.json["models"]["ranked"]["training"]
    assert training["label_split"] == "last-basket" and training["label_users"] == 40
