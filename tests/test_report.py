"""The offline-evaluation HTML report: self-contained, escaped, robust to missing pieces."""

from __future__ import annotations

import base64
import copy
import html as html_lib
import itertools
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from recctl.evaluate.report import write_report
from tests import browser

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMG_RE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _model(scale: float, pop_head: float, wall_s: float) -> dict[str, Any]:
    """Plausible metrics for one model; ``scale`` sets its accuracy, ``pop_head`` its popularity bias."""
    metrics: dict[str, float] = {}
    ci95: dict[str, list[float]] = {}
    for k in (10, 20):
        grow = 1.0 if k == 10 else 1.45
        acc = {
            "recall": 0.052 * scale * grow,
            "ndcg": 0.031 * scale * (1.0 if k == 10 else 1.18),
            "precision": 0.0061 * scale * (1.0 if k == 10 else 0.74),
            "mrr": 0.024 * scale * (1.0 if k == 10 else 1.06),
            "map": 0.017 * scale * (1.0 if k == 10 else 1.09),
            "hit": 0.081 * scale * grow,
        }
        for name, value in acc.items():
            metrics[f"{name}@{k}"] = round(value, 6)
            ci95[f"{name}@{k}"] = [round(value * 0.82, 6), round(value * 1.19, 6)]
        metrics[f"coverage@{k}"] = round(min(1.0, (1.05 - pop_head) * 0.6 * grow), 6)
        metrics[f"novelty@{k}"] = round(6.5 + 4.0 * (1 - pop_head), 6)
        metrics[f"ild@{k}"] = round(0.55 + 0.3 * (1 - pop_head), 6)
        metrics[f"top1pct_share@{k}"] = round(pop_head * 0.8, 6)
    head = [pop_head, min(pop_head, (1 - pop_head) * 0.5)]
    rest = (1 - sum(head)) / 8
    return {
        "metrics": metrics,
        "ci95": ci95,
        "curve": {
            "recall": {str(k): round(0.052 * scale * (k / 10) ** 0.55, 6) for k in (1, 5, 10, 20, 50)},
            "ndcg": {str(k): round(0.031 * scale * (k / 10) ** 0.25, 6) for k in (1, 5, 10, 20, 50)},
        },
        "by_state": {
            "new": {"users": 120, "recall@10": 0.03 * scale, "ndcg@10": 0.018 * scale},
            "returning": {"users": 300, "recall@10": 0.055 * scale, "ndcg@10": 0.033 * scale},
            "buyer": {"users": 180, "recall@10": 0.07 * scale, "ndcg@10": 0.041 * scale},
        },
        "pop_deciles": [round(v, 6) for v in head + [rest] * 8],
        "wall_s": wall_s,
    }


def realistic_result() -> dict[str, Any]:
    """A result dict shaped like the evaluation runner's output, with four models."""
    result: dict[str, Any] = {
        "protocol": "temporal",
        "variant": "all",
        "dataset": "sample-shop",
        "created_at": "2026-09-20 09:30 UTC",
        "settings": {
            "cutoff": "2026-09-02T00:00:00",
            "target_events": ["purchase"],
            "filter_seen": True,
            "ks": [10, 20],
            "curve_ks": [1, 5, 10, 20, 50],
            "seed": 42,
            "n_boot": 1000,
        },
        "data": {
            "train_events": 120000,
            "train_users": 1800,
            "train_items": 1480,
            "catalog_items": 1500,
            "test_users": 600,
            "test_targets": 900,
            "cutoff": "2026-09-02T00:00:00",
            "test_start": "2026-09-02T00:00:00",
            "test_end": "2026-09-16T00:00:00",
        },
        "catalog_deciles": [0.41, 0.18, 0.12, 0.08, 0.06, 0.05, 0.04, 0.03, 0.02, 0.01],
        "models": {
            "popular": _model(1.0, 0.9, 1.2),
            "popular-recent": _model(1.25, 0.7, 1.4),
            "random": _model(0.08, 0.1, 0.3),
            "pipeline": {
                **_model(2.1, 0.45, 38.7),
                "lift": {  # the runner's paired lifts: [point, low, high]
                    "popular": {"ndcg@10": [1.1, 0.62, 1.9], "ndcg@20": [1.0, 0.5, 1.6]},
                    "popular-recent": {"ndcg@10": [0.68, 0.3, 1.1], "ndcg@20": [0.6, 0.2, 1.0]},
                    "random": {"ndcg@10": [25.0, 20.0, 31.0], "ndcg@20": [24.0, 19.0, 30.0]},
                },
            },
        },
        "categories": {
            "Women > Clothing": {"targets": 400, "users": 310},
            "Men > Shoes": {"targets": 180, "users": 150},
            "Kids > Accessories": {"targets": 12, "users": 9},
        },
        "examples": {
            "model": "pipeline",
            "customers": [
                {
                    "user": "u0042",
                    "state": "buyer",
                    "history": [
                        {
                            "item_id": "p1",
                            "name": "Northwind Brown Denim Jeans",
                            "event_type": "purchase",
                            "ts": "2026-08-30",
                        },
                        {
                            "item_id": "p2",
                            "name": "Valenti · Boots",
                            "event_type": "view",
                            "ts": "2026-08-29",
                        },
                    ],
                    "recommended": [
                        {"item_id": "p7", "name": "Valenti Black Suede Boots", "rank": 1, "hit": True},
                        {"item_id": "p8", "name": "Aurora Linen Shirt", "rank": 2, "hit": False},
                    ],
                    "targets": [{"item_id": "p7", "name": "Valenti Black Suede Boots"}],
                },
                {
                    "user": "u0077",
                    "state": "new",
                    "history": [],
                    "recommended": [
                        {"item_id": "p9", "name": "Kids > Shoes > Sandals", "rank": 1, "hit": False}
                    ],
                    "targets": [{"item_id": "p3", "name": "Sunny Sandals"}],
                },
            ],
        },
    }
    for model in result["models"].values():  # by_category: share of the category's targets hit
        scale = model["metrics"]["recall@10"] / 0.052
        model["by_category"] = {
            "Women > Clothing": 0.05 * scale,
            "Men > Shoes": 0.04 * scale,
            "Kids > Accessories": 0.2 * scale,
        }
    return result


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(b64, validate=True) for b64 in IMG_RE.findall(html)]


def _assert_self_contained(html: str) -> None:
    low = html.lower()
    for banned in ("http://", "https://", "//cdn", "<script src", "<link", "@import"):
        assert banned not in low, banned


def test_report_full(tmp_path: Path) -> None:
    result = realistic_result()
    out = write_report(result, tmp_path / "sub" / "report.html")
    assert out == tmp_path / "sub" / "report.html"
    assert out.is_file()
    html = out.read_text(encoding="utf-8")

    for name in result["models"]:
        assert f"<td>{name}</td>" in html
    pipeline = result["models"]["pipeline"]
    for key in ("recall@10", "ndcg@20", "coverage@10", "novelty@20", "top1pct_share@10"):
        assert f"{pipeline['metrics'][key]:.4f}" in html, key
    low, high = pipeline["ci95"]["recall@10"]
    assert f"{low:.4f}–{high:.4f}" in html
    # the best recall@10 (pipeline) and the lowest top1pct_share (random) are bold
    assert f"<b>{pipeline['metrics']['recall@10']:.4f}</b>" in html
    assert f"<b>{result['models']['random']['metrics']['top1pct_share@10']:.4f}</b>" in html
    for fact in (
        "sample-shop",
        "temporal",
        "2026-09-02T00:00:00",
        "purchase",
        "1,000",
        "seed 42",
        "never sampled",
    ):
        assert fact in html, fact
    assert "120,000" in html and "1,500" in html

    images = _images(html)
    assert len(images) == 3  # curves, popularity, coverage; the breakdowns are tables
    assert all(img.startswith(PNG_MAGIC) for img in images)
    assert "Skipped" not in html
    _assert_self_contained(html)


def test_report_escapes_text(tmp_path: Path) -> None:
    result = realistic_result()
    result["models"]["<b>x</b>"] = result["models"].pop("random")
    result["models"]["cost $5 & $10"] = result["models"].pop("popular")  # '$' must not start mathtext
    result["dataset"] = 'shop "A" & <co>'
    html = write_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<b>x</b>" not in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert "cost $5 &amp; $10" in html
    assert "<co>" not in html and "&lt;co&gt;" in html and "&amp;" in html
    assert len(_images(html)) == 3
    _assert_self_contained(html)


def test_report_robust_to_missing_pieces(tmp_path: Path) -> None:
    result = realistic_result()
    solo = copy.deepcopy(result["models"]["popular"])
    del solo["by_state"]
    solo["metrics"]["ndcg@10"] = math.nan
    solo["metrics"]["coverage@20"] = None
    solo["curve"]["recall"]["5"] = math.nan
    result["models"] = {"popular": solo}
    html = write_report(result, tmp_path / "one.html").read_text(encoding="utf-8")
    assert "popular" in html
    assert "n/a" in html
    assert "by_state" in html and "Skipped" in html  # the per-state table is replaced by a note
    images = _images(html)
    assert len(images) == 3 and all(img.startswith(PNG_MAGIC) for img in images)
    assert "<b>" not in html.split("<h2>Metrics</h2>")[1].split("<h2>")[0]  # nothing to beat: no bold "best"
    _assert_self_contained(html)


def test_report_partial_breakdowns(tmp_path: Path) -> None:
    result = realistic_result()
    models = result["models"]
    del models["random"]["by_state"]  # one model without the per-state split
    models["popular"]["by_state"]["buyer"]["ndcg@10"] = math.nan
    models["pipeline"]["pop_deciles"] = [0.5, 0.5]  # wrong length: left out of that plot
    del models["popular-recent"]["curve"]
    html = write_report(result, tmp_path / "partial.html").read_text(encoding="utf-8")
    assert len(_images(html)) == 3
    assert "Skipped" not in html


def test_report_survives_a_bare_result(tmp_path: Path) -> None:
    html = write_report({"models": {"m": {}}}, tmp_path / "bare.html").read_text(encoding="utf-8")
    assert "<td>m</td>" not in html  # no metrics at all: a note instead of a table
    assert html.count('class="note"') >= 6
    html = write_report({}, tmp_path / "empty.html").read_text(encoding="utf-8")
    assert "Offline evaluation" in html
    _assert_self_contained(html)


def test_matplotlib_not_loaded_on_import() -> None:
    code = "import sys, recctl.evaluate.report; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- what a merchandiser reads

SHOP_MODELS = ("ranked", "trending", "next-item", "viewed-together", "bought-together", "itemknn", "content",
               "affinity", "ease", "ials", "buy-again", "sasrec", "popular", "popular-recent", "random",
               "personal-top")  # fmt: skip  # the 16 series of the sample shop's evaluation


def shop_result() -> dict[str, Any]:
    """The realistic result with the sample shop's 16 models (the case that shared colours and overlapped)."""
    result = realistic_result()
    pipeline = result["models"].pop("pipeline")
    models = {name: _model(0.2 + 0.15 * i, 0.1 + 0.05 * i, 1.0) for i, name in enumerate(SHOP_MODELS)}
    models["ranked"] = pipeline
    for model in models.values():
        model["by_category"] = dict.fromkeys(result["categories"], model["metrics"]["recall@10"])
    result["models"] = models
    result["examples"]["model"] = "ranked"
    return result


def _verdict_html(html: str) -> str:
    return html.split('id="verdict">')[1].split("</div>", maxsplit=1)[0]


def _text(fragment: str) -> str:
    """The words of an HTML fragment: tags dropped (inline ones silently, cells as spaces), entities decoded."""
    fragment = re.sub(r"</?(b|i|span|small|a)\b[^>]*>", "", fragment)
    return html_lib.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment))).strip()


@pytest.mark.parametrize(
    ("lift", "said"),
    [
        ([1.1, 0.62, 1.9], "pipeline beats popular by 110% on NDCG@10 (0.0651 vs 0.0310), 95% interval [+62%, +190%]"),
        ([0.05, -0.1, 0.2], "pipeline and popular are not distinguishable on NDCG@10"),
        ([-0.3, -0.5, -0.1], "pipeline is worse than popular by 30% on NDCG@10"),
    ],
)  # fmt: skip
def test_verdict_states_the_paired_interval(tmp_path: Path, lift: list[float], said: str) -> None:
    result = realistic_result()
    result["models"]["pipeline"]["lift"]["popular"]["ndcg@10"] = lift
    html = write_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    verdict = _text(_verdict_html(html))
    assert said in verdict, verdict
    assert html.index('id="verdict"') < html.index("<h2>")  # at the top, before every section
    if lift[1] <= 0 <= lift[2]:
        assert "interval [−10%, +20%] covers 0" in verdict
    # the strongest other model (random is never "the strongest other") comes second, with its own interval
    assert "Against the strongest other model: pipeline beats popular-recent by 68%" in verdict
    assert "same 600 test users" in verdict and "1,000 resamples" in verdict


def test_verdict_without_a_pipeline_and_with_few_users(tmp_path: Path) -> None:
    result = realistic_result()
    del result["models"]["pipeline"]
    result["data"]["test_users"] = 12
    verdict = _text(_verdict_html(write_report(result, tmp_path / "r.html").read_text(encoding="utf-8")))
    assert "popular-recent has the highest NDCG@10" in verdict
    assert "No paired comparison" in verdict
    assert "⚠ only 12 test users (fewer than 30)" in verdict


def test_small_groups_are_flagged_and_greyed(tmp_path: Path) -> None:
    result = realistic_result()
    for model in result["models"].values():
        model["by_state"]["buyer"]["users"] = 1  # the "buyer (1 users) 0.307" row of the issue
    html = write_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    table = html.split('id="by-state">')[1].split("</table>")[0]
    header = table.split("</tr>")[0]
    assert 'buyer<small>1 user <span class="warn">⚠ too few</span></small>' in header
    assert "returning<small>300 users</small>" in header  # big enough: no flag
    row = next(r for r in table.split("<tr>") if r.startswith("<td>pipeline</td>"))
    cells = re.findall(r"<td( class=\"few\")?>([^<]*)</td>", row)[1:]
    # two metrics per state (ndcg@10, recall@10); the buyer pair (last) is greyed, the others are not
    assert [bool(c) for c, _ in cells] == [False, False, False, False, True, True]
    assert "⚠ buyer: fewer than 30 test users" in html
    cats = html.split('id="by-category">')[1].split("</table>")[0]
    assert '<tr class="few"><td>Kids &gt; Accessories</td>' in cats  # 9 users
    assert "<tr><td>Women &gt; Clothing</td>" in cats and "1 category has fewer than 30" in html


def test_category_breakdown(tmp_path: Path) -> None:
    html = write_report(realistic_result(), tmp_path / "r.html").read_text(encoding="utf-8")
    table = html.split('id="by-category">')[1].split("</table>")[0]
    rows = [_text(r) for r in re.findall(r"<tr[^>]*>(.*?)</tr>", table)[1:]]
    # largest category first; targets, users, then each model's share of the targets it had in the top 10
    assert [r.split(" ")[0] for r in rows] == ["Women", "Men", "Kids"]
    assert rows[0].startswith("Women > Clothing 400 310 5.0% 6.2% 0.4% 10.5%")  # popular … pipeline


def test_breakdowns_keep_to_a_readable_number_of_models(tmp_path: Path) -> None:
    html = write_report(shop_result(), tmp_path / "r.html").read_text(encoding="utf-8")
    head = html.split('id="by-category">')[1].split("</tr>")[0]
    shown = re.findall(r"<th>([^<]+)</th>", head)[3:]
    assert len(shown) == 6 and shown[0] == "ranked" and "popular" in shown and "popular-recent" in shown
    assert "10 more model(s) are in the --json result" in html


def test_example_customers_with_product_names(tmp_path: Path) -> None:
    html = write_report(realistic_result(), tmp_path / "r.html").read_text(encoding="utf-8")
    examples = html.split('id="examples">')[1].split("<h2>")[0]
    first, second = examples.split('<div class="customer">')[1:3]
    assert "Customer u0042 · buyer — 1 of 2 recommendations bought" in _text(first)
    assert (
        "Northwind Brown Denim Jeans" in first and "Valenti · Boots" in first
    )  # history, with fallback names
    assert '<li class="hit">Valenti Black Suede Boots <small>✓ bought</small></li>' in first
    assert "<li>Aurora Linen Shirt</li>" in first and "Top 2 from pipeline" in first
    assert "Kids &gt; Shoes &gt; Sandals" in second and "Sunny Sandals" in second and "none" in second


def test_series_styles_are_distinct() -> None:
    from recctl.evaluate.report import MARKERS, series_styles

    for n in (4, 14, 16, 40):
        styles = series_styles([f"m{i}" for i in range(n)])
        assert len(styles) == n
        assert len({s.color for s in styles.values()}) == n  # no two series share a colour
        assert len({(s.color, s.marker) for s in styles.values()}) == n
        if n <= len(MARKERS):
            assert len({s.marker for s in styles.values()}) == n  # nor a marker
    rgb = [
        tuple(int(c[i : i + 2], 16) for i in (1, 3, 5))
        for c in (s.color for s in series_styles(SHOP_MODELS).values())
    ]
    closest = min(math.dist(a, b) for i, a in enumerate(rgb) for b in rgb[i + 1 :])
    assert closest > 40, closest  # 16 colours that an eye can tell apart (0-255 RGB distance)


def _lines(fig: Any) -> list[Any]:
    return [line for ax in fig.axes for line in ax.get_lines()]


def test_every_series_in_the_charts_has_its_own_colour_and_marker() -> None:
    from matplotlib.colors import to_hex

    from recctl.evaluate.report import figures

    charts = {c.heading: c.figure for c in figures(shop_result())}
    for heading in ("Accuracy vs. list length", "Popularity of recommended items"):
        fig = charts[heading]
        assert fig is not None
        for ax in fig.axes:
            styles = [(to_hex(line.get_color()), line.get_marker()) for line in ax.get_lines()]
            assert len(styles) == len(SHOP_MODELS), heading
            assert len(set(styles)) == len(styles), heading
            assert len({c for c, _ in styles}) == len(styles), heading


def _boxes(fig: Any) -> list[tuple[str, Any]]:
    """The drawn extent (display pixels) of every visible, non-empty text in a figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ticks: set[int] = set()  # tick labels: only those of ticks inside the view are drawn
    drawn: list[Text] = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks.update({id(tick.label1), id(tick.label2)})
                if low - 1e-9 * abs(high - low) <= tick.get_loc() <= high + 1e-9 * abs(high - low):
                    drawn += [label for label in (tick.label1, tick.label2) if label.get_visible()]
    drawn += [t for t in fig.findobj(Text) if id(t) not in ticks and t.get_visible()]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in drawn if t.get_text().strip()]


def test_no_labels_overlap_in_any_chart() -> None:
    from recctl.evaluate.report import figures

    for result in (realistic_result(), shop_result()):
        for chart in figures(result):
            assert chart.figure is not None, chart.heading
            boxes = _boxes(chart.figure)
            page = chart.figure.bbox
            for i, (a, box_a) in enumerate(boxes):
                # every label inside the image (nothing cut off at an edge)
                assert box_a.x0 >= page.x0 - 1 and box_a.x1 <= page.x1 + 1, (chart.heading, a)
                assert box_a.y0 >= page.y0 - 1 and box_a.y1 <= page.y1 + 1, (chart.heading, a)
                for b, box_b in boxes[i + 1 :]:
                    assert not box_a.overlaps(box_b), (chart.heading, a, b)


def test_coverage_labels_have_room_with_many_models() -> None:
    """One row per (model, K) bar: each value label sits right of its own bar, rows at least a label apart."""
    from recctl.evaluate.report import figures

    fig = next(c.figure for c in figures(shop_result()) if c.heading == "Catalog coverage")
    assert fig is not None
    labels = [(t, b) for t, b in _boxes(fig) if t.endswith("%") and t[0].isdigit() and "." in t]
    assert len(labels) == 2 * len(SHOP_MODELS)  # coverage@10 and @20 for each model
    ys = sorted(b.y0 for _, b in labels)
    height = max(b.height for _, b in labels)
    assert min(y2 - y1 for y1, y2 in itertools.pairwise(ys)) >= height


# ---------------------------------------------------------------- in a real browser


@pytest.mark.skipif(browser.chromium() is None, reason="the OS chromium is not installed")
def test_report_in_headless_chromium(tmp_path: Path) -> None:
    html = write_report(shop_result(), tmp_path / "report.html")
    dom = browser.dump_dom(html)
    verdict = _text(dom.split('id="verdict">')[1].split("</div>", maxsplit=1)[0])
    assert "ranked beats popular by 110% on NDCG@10" in verdict
    examples = dom.split('id="examples">')[1]
    assert "Valenti Black Suede Boots" in examples and "Northwind Brown Denim Jeans" in examples
    assert dom.count('<div class="customer">') == 2
    assert 'id="by-category"' in dom and 'id="by-state"' in dom
    png = browser.screenshot(html, tmp_path / "report.png")
    size, share, colours = browser.ink(png)
    assert size == browser.WINDOW
    assert share > 0.05 and colours > 100, (share, colours)  # text, tables and charts, not a blank page


# ---------------------------------------------------------------- the data the runner hands the report


def test_item_names_fall_back_to_brand_and_category() -> None:
    import polars as pl

    from recctl.evaluate.runner import item_names

    items = pl.DataFrame(
        {
            "item_id": ["a", "b", "c", "d", "e"],
            "title": ["Red Dress", " ", None, None, None],
            "brand": ["Acme", "Acme", None, "Valenti", None],
            "category": ["Women > Dresses", "Women > Shoes > Boots", "Kids > Hats", None, None],
        }
    )
    assert dict(item_names(items).rows()) == {
        "a": "Red Dress",
        "b": "Acme · Boots",  # a blank title is no title
        "c": "Kids > Hats",  # no brand: the whole category path
        "d": "Valenti",
        "e": "e",
    }
    assert dict(item_names(pl.DataFrame({"item_id": ["x"]})).rows()) == {"x": "x"}  # an export without items


def test_target_categories_pick_a_readable_level() -> None:
    import polars as pl

    from recctl.evaluate import metrics as M

    leaves = [
        f"{top} > {mid} > Leaf{i}"
        for top in ("Women", "Men")
        for mid in ("Clothing", "Shoes")
        for i in range(5)
    ]
    items = pl.DataFrame(
        {"item_id": [f"p{i}" for i in range(len(leaves))] + ["bare"], "category": [*leaves, None]}
    )
    targets = pl.DataFrame(
        {"user_id": [f"u{i}" for i in range(21)], "item_id": [*items["item_id"][:20], "bare"]}
    )
    groups = M.target_categories(targets, items, max_groups=12)
    # 20 leaves are too many, the second level gives 4 groups (+ unknown for the item without a category)
    assert sorted(groups["category"].unique()) == ["Men > Clothing", "Men > Shoes", "Women > Clothing",
                                                   "Women > Shoes", "unknown"]  # fmt: skip
    few = M.target_categories(targets, items, max_groups=2)  # even the top level is too many
    assert sorted(few["category"].unique()) == ["Men", "other"]  # the largest (ties by name), the rest other
    recs = pl.DataFrame({"user_id": ["u0", "u5"], "item_id": ["p0", "nope"], "rank": [1, 1]})
    shares = M.by_category(recs, groups, 10)
    assert shares["Women > Clothing"] == pytest.approx(1 / 5)  # u0 found p0; u1..u4 found nothing
    assert shares["Women > Shoes"] == 0.0
    assert M.category_counts(groups)["unknown"] == {"targets": 1, "users": 1}


def test_evaluate_hands_the_report_examples_and_categories(tmp_path: Path) -> None:
    """evaluate_specs on a tiny shop: three example customers with named history and lists, a category
    breakdown per model, and the report renders them."""
    from datetime import datetime, timedelta

    import polars as pl

    from recctl.config import CandidateSpec, RecctlConfig
    from recctl.evaluate.runner import Options, evaluate_specs
    from recctl.evaluate.splits import temporal

    t0 = datetime(2024, 1, 1)
    rows = [
        (f"u{u:02d}", f"p{(u + j) % 12}", "view", t0 + timedelta(days=j)) for u in range(40) for j in range(4)
    ]
    rows += [(f"u{u:02d}", f"p{u % 3}", "purchase", t0 + timedelta(days=20)) for u in range(40)]
    ev = pl.DataFrame(rows, schema={"user_id": pl.String, "item_id": pl.String, "event_type": pl.String,
                                    "ts": pl.Datetime("us")}, orient="row")  # fmt: skip
    items = pl.DataFrame({
        "item_id": [f"p{i}" for i in range(12)],
        "title": [f"Dress no. {i}" if i % 2 else None for i in range(12)],
        "brand": ["Acme"] * 12,
        "category": ["Women > Dresses" if i % 2 else "Men > Boots" for i in range(12)],
    })  # fmt: skip
    split = temporal(ev, "2024-01-10", target_events=["purchase"])
    specs = [CandidateSpec(name="popular", kind="popular"), CandidateSpec(name="random", kind="random")]
    result = evaluate_specs(split, specs, Options.from_config(RecctlConfig()), items=items, dataset="tiny")
    ex = result["examples"]
    assert ex["model"] == "popular" and len(ex["customers"]) == 3
    again = evaluate_specs(split, specs, Options.from_config(RecctlConfig()), items=items, dataset="tiny")
    assert [c["user"] for c in again["examples"]["customers"]] == [
        c["user"] for c in ex["customers"]
    ]  # seeded
    for c in ex["customers"]:
        assert c["state"] == "returning" and 3 <= len(c["history"]) <= 6
        assert [r["rank"] for r in c["recommended"]] == sorted(r["rank"] for r in c["recommended"])
        assert all(r["name"] in {f"Dress no. {i}" for i in range(1, 12, 2)} | {"Acme · Boots"}
                   for part in ("history", "recommended", "targets") for r in c[part])  # fmt: skip
        bought = {t["item_id"] for t in c["targets"]}
        assert all(r["hit"] == (r["item_id"] in bought) for r in c["recommended"])
    assert result["categories"] == {"Men > Boots": {"targets": 27, "users": 27},
                                    "Women > Dresses": {"targets": 13, "users": 13}}  # fmt: skip
    assert set(result["models"]["random"]["by_category"]) == set(result["categories"])
    html = write_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Acme · Boots" in html and "Customer u" in html and 'id="by-category"' in html
    assert html.count("⚠ too few") >= 2  # both categories have fewer than 30 users


def test_verdict_survives_a_missing_or_broken_lift(tmp_path: Path) -> None:
    result = realistic_result()
    lift = result["models"]["pipeline"]["lift"]
    lift["popular"]["ndcg@10"] = [math.nan, math.nan, math.nan]  # paired_lift when popular scores 0
    lift["popular-recent"]["ndcg@10"] = "broken"
    verdict = _text(_verdict_html(write_report(result, tmp_path / "r.html").read_text(encoding="utf-8")))
    assert "pipeline against popular on NDCG@10 (0.0651 vs 0.0310): no paired interval" in verdict
    assert "pipeline against popular-recent on NDCG@10" in verdict and "beats" not in verdict
