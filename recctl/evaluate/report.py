"""Self-contained HTML report for one offline evaluation result, written for the merchandiser who reads it.

``write_report(result, path)`` writes a single page that needs no network: the CSS is inline, the plots are
embedded as base64 PNG ``data:`` images and every piece of text is HTML-escaped, so it reads the same from
disk and in mail. matplotlib is imported lazily (only when a report is written) and driven through
``matplotlib.figure.Figure`` with the Agg canvas: no pyplot state and no global rcParams are touched.

The page, top to bottom: a plain verdict (the pipeline against the popularity baseline, with the paired
bootstrap interval the runner computed over the same test users), how the numbers were made, the metric
tables, a few example customers with product names, the breakdowns by target category and by visitor
state (groups of fewer than `MIN_USERS` users are flagged and greyed), then the charts. Every series has
its own colour and marker (`series_styles`); charts with value labels are laid out so labels never overlap
(horizontal bars, one row per bar); `figures` returns the charts as matplotlib figures for the tests.
"""

from __future__ import annotations

import base64
import colorsys
import io
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

METRIC_ORDER = (
    "recall",
    "ndcg",
    "precision",
    "mrr",
    "map",
    "hit",
    "coverage",
    "novelty",
    "ild",
    "top1pct_share",
)
LOWER_IS_BETTER = frozenset({"top1pct_share"})
STATE_ORDER = ("new", "returning", "buyer")
BASELINE_ORDER = ("popular", "popular-recent", "personal-top", "random")
PROTOCOLS = {
    "temporal": "train on every event before the cutoff, test on each user's target events inside the test window",
    "leave-one-out": "hold out each test user's last target event, train on everything else",
    "next-basket": "hold out each test user's last basket of target events, train on everything before it",
}
#: A group (visitor state, category) with fewer test users than this is flagged and its values greyed.
MIN_USERS = 30
#: Breakdown tables show every model up to this many, else the pipeline, popular and the best others.
MAX_BREAKDOWN_MODELS = 6
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*", "d", "8", "H")
DASHES: tuple[Any, ...] = ("-", "--", "-.", ":", (0, (6, 2, 1, 2, 1, 2)))
CATALOG_COLOR = "#9e9e9e"
K_COLORS = ("#9ecae1", "#4292c6", "#08519c", "#08306b")  # blues, light to dark, one per K
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#222;margin:0;background:#fff}
main{max-width:1140px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:14px 0 4px}
.sub{color:#666;margin:0 0 16px}.note{color:#8a5a00;background:#fff8e5;padding:6px 10px;border-radius:4px}
.verdict{background:#eef7ee;border-left:6px solid #2e7d32;padding:10px 16px;border-radius:4px;font-size:16px;margin:0 0 14px}
.verdict.even{background:#f5f5f5;border-color:#757575}.verdict.worse{background:#fdecea;border-color:#c62828}
.verdict p{margin:4px 0}.verdict small{display:block;color:#555;font-size:12px;margin-top:6px}
.warn{color:#8a5a00;font-weight:600;white-space:nowrap}
.box{background:#f4f7fb;border-left:4px solid #4a78b0;padding:10px 16px;border-radius:4px}
.box ul{margin:4px 0;padding-left:20px}.counts{display:flex;flex-wrap:wrap;gap:8px;margin-top:10px}
.counts div{background:#fff;border:1px solid #d8e0ea;border-radius:4px;padding:4px 10px}
.counts b{display:block;font-size:16px}
table{border-collapse:collapse;width:100%;font-size:13px;margin:6px 0}
th,td{padding:5px 5px;border-bottom:1px solid #e4e4e4;text-align:right;vertical-align:top}
th{background:#f2f2f2;font-weight:600;font-size:12px}th[colspan]{text-align:center}th:first-child,td:first-child{text-align:left;white-space:nowrap}
td small,th small{display:block;color:#777;font-size:11px;white-space:nowrap;font-weight:400}
td.few,tr.few td{color:#9e9e9e}tr.few td:first-child{color:#222}
img{display:block;width:100%;height:auto;margin:6px 0}.legend{color:#666;font-size:12px}
.customer{border:1px solid #dde3ea;border-radius:6px;padding:8px 14px;margin:10px 0}
.customer h3{margin:2px 0 6px}.cols{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:16px}
.cols h4{font-size:12px;margin:4px 0;color:#555;font-weight:600;text-transform:uppercase;letter-spacing:.03em}
.cols ol,.cols ul{margin:0;padding-left:22px;font-size:13px}.cols li{margin:1px 0}
.cols li small{color:#777}.cols li.hit{font-weight:600;color:#1b5e20}.cols .none{color:#777;font-size:13px}
"""


class SeriesStyle(NamedTuple):
    color: str
    marker: str
    dash: Any


def series_styles(names: Sequence[str]) -> dict[str, SeriesStyle]:
    """A colour, a marker and a dash pattern for every series, as many as needed.

    The n colours are generated in HLS: n evenly spaced hues, the lightness cycling through three levels
    along the wheel (so neighbouring hues also differ in lightness); series i takes hue i·step mod n with
    step coprime to n near 0.38 n, so series next to each other in the list are far apart on the wheel.
    Markers and dash patterns cycle through their own lists. No two series share a colour, so no two
    share colour + marker; up to len(MARKERS) series no two share a marker either.
    """
    unique = list(dict.fromkeys(names))
    n = max(len(unique), 1)
    step = max(1, round(n * 0.382))
    while math.gcd(step, n) != 1:
        step += 1
    out: dict[str, SeriesStyle] = {}
    for i, name in enumerate(unique):
        j = (i * step) % n
        r, g, b = colorsys.hls_to_rgb((0.58 + j / n) % 1.0, (0.33, 0.5, 0.66)[j % 3] if n > 3 else 0.42, 0.85)
        color = f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
        out[name] = SeriesStyle(color, MARKERS[i % len(MARKERS)], DASHES[i % len(DASHES)])
    return out


def _num(value: Any) -> float:
    """A finite-or-NaN float for any JSON value (None, strings and bools become NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _fmt(value: Any) -> str:
    v = _num(value)
    if not math.isfinite(v):
        return "n/a"
    return f"{v:,.1f}" if abs(v) >= 1000 else f"{v:.4f}"


def _count(value: Any) -> str:
    v = _num(value)
    return f"{int(v):,}" if math.isfinite(v) else "n/a"


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _label(text: str) -> str:
    """Text for matplotlib: ``$`` would start mathtext."""
    return text.replace("$", r"\$")


def _metric_names(models: Mapping[str, dict[str, Any]]) -> tuple[list[str], list[int]]:
    names: set[str] = set()
    ks: set[int] = set()
    for model in models.values():
        for key in _dict(model.get("metrics")):
            name, _, k = str(key).rpartition("@")
            if name and k.isdigit():
                names.add(name)
                ks.add(int(k))
    ordered = [n for n in METRIC_ORDER if n in names] + sorted(names - set(METRIC_ORDER))
    return ordered, sorted(ks)


# ---------------------------------------------------------------- plots


class Chart(NamedTuple):
    heading: str
    figure: Figure | None  # None: skipped, ``note`` says why
    note: str


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _png(fig: Figure) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _style(ax: Axes, title: str, ylabel: str) -> None:
    ax.set_title(_label(title), fontsize=12)
    ax.set_ylabel(_label(ylabel), fontsize=10)
    ax.tick_params(labelsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)


def _legend_height(n: int) -> float:
    """Inches the legend of `_legend` adds below the plots for ``n`` series."""
    return 0.0 if n <= 8 else 0.1 + 0.2 * math.ceil(n / 6)


def _legend(
    fig: Figure, n: int, handles: Sequence[Any] | None = None, labels: Sequence[str] | None = None
) -> None:
    """One legend for the figure: right of the plots for a few series, below them (in rows of six) for
    many, so that the plots keep their width."""
    few = n <= 8
    loc: Literal["outside right upper", "outside lower center"] = (
        "outside right upper" if few else "outside lower center"
    )
    style: dict[str, Any] = {"fontsize": 9, "frameon": False, "ncols": 1 if few else 6}
    if handles is not None and labels is not None:
        fig.legend(handles, labels, loc=loc, **style)
    else:
        fig.legend(loc=loc, **style)


def _plot_curves(models: Mapping[str, dict[str, Any]], styles: Mapping[str, SeriesStyle]) -> Chart:
    heading = "Accuracy vs. list length"
    series: dict[str, list[tuple[str, list[int], list[float]]]] = {"recall": [], "ndcg": []}
    all_ks: set[int] = set()
    for metric, lines in series.items():
        for name, model in models.items():
            curve = _dict(_dict(model.get("curve")).get(metric))
            pts = sorted((int(k), _num(v)) for k, v in curve.items() if str(k).isdigit())
            pts = [(k, v) for k, v in pts if math.isfinite(v)]
            if pts:
                lines.append((name, [k for k, _ in pts], [v for _, v in pts]))
                all_ks.update(k for k, _ in pts)
    if not any(series.values()):
        return Chart(heading, None, "Skipped: no model has recall@K / ndcg@K curve values.")
    n_series = len({name for lines in series.values() for name, _, _ in lines})
    fig = _figure(11.0, 3.8 + _legend_height(n_series))
    axes = fig.subplots(1, 2)
    for ax, (metric, lines) in zip(axes, series.items(), strict=True):
        for name, xs, ys in lines:
            st = styles[name]
            ax.plot(xs, ys, marker=st.marker, ls=st.dash, lw=1.8, ms=6, color=st.color, label=_label(name))
        _style(ax, f"{metric}@K", metric)
        ax.set_xscale("log")
        ax.set_xticks(sorted(all_ks), [str(k) for k in sorted(all_ks)])
        ax.minorticks_off()
        ax.set_xlabel("K (log scale)", fontsize=10)
        ax.set_ylim(bottom=0)
    legend = {lbl: h for ax in axes for h, lbl in zip(*ax.get_legend_handles_labels(), strict=True)}
    _legend(fig, len(legend), list(legend.values()), list(legend))
    return Chart(
        heading, fig, "Each model's metric as the list length K grows (all test users, full-catalog ranking)."
    )


def _plot_popularity(
    models: Mapping[str, dict[str, Any]], styles: Mapping[str, SeriesStyle], catalog: Any, ks: Sequence[int]
) -> Chart:
    from matplotlib.ticker import PercentFormatter

    heading = "Popularity of recommended items"
    base = [_num(v) for v in catalog] if isinstance(catalog, list) and catalog else []
    n = len(base) or 10
    lines = []
    for name, model in models.items():
        deciles = model.get("pop_deciles")
        if isinstance(deciles, list) and len(deciles) == n:
            lines.append((name, [_num(v) for v in deciles]))
    values = base + [v for _, vals in lines for v in vals]
    if not any(math.isfinite(v) for v in values):
        return Chart(heading, None, "Skipped: no popularity-decile data in this result.")
    fig = _figure(11.0, 3.6 + _legend_height(len(lines) + bool(base)))
    ax = fig.subplots()
    xs = list(range(1, n + 1))
    if base:
        heights = [v if math.isfinite(v) else 0.0 for v in base]
        ax.bar(xs, heights, 0.8, color=CATALOG_COLOR, alpha=0.45, label="catalog (train interactions)")
    for name, vals in lines:
        st = styles[name]
        ax.plot(xs, vals, marker=st.marker, ls=st.dash, lw=1.6, ms=6, color=st.color, label=_label(name))
    _style(ax, "Where recommendations fall on the popularity curve", "share")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_ylim(bottom=0)
    ax.set_xlabel(
        "item popularity decile in train (1 = most popular 10% of items … 10 = least popular)", fontsize=10
    )
    _legend(fig, len(lines) + bool(base))
    top = f"top-{ks[0]}" if ks else "top-K"
    note = (f"Grey bars: share of train interactions per decile; lines: share of each model's {top} items "
            "per decile.")  # fmt: skip
    return Chart(heading, fig, note)


def _plot_coverage(models: Mapping[str, dict[str, Any]], ks: Sequence[int], n_catalog: str) -> Chart:
    """Horizontal bars, one row per (model, K), each value written at the end of its bar: every label has
    its own row, so labels cannot overlap however many models there are."""
    heading = "Catalog coverage"
    names = list(models)
    series: list[tuple[int, str, list[float]]] = []
    for i, k in enumerate(ks):
        values = [_num(_dict(models[m].get("metrics")).get(f"coverage@{k}")) for m in names]
        if any(math.isfinite(v) for v in values):
            series.append((k, K_COLORS[min(i, len(K_COLORS) - 1)], values))
    if not series:
        return Chart(heading, None, "Skipped: no coverage@K values in this result.")
    per_model = len(series)
    rows = len(names) * (per_model + 0.6)
    fig = _figure(11.0, 1.0 + 0.2 * rows)
    ax = fig.subplots()
    height = 0.8 / per_model
    top = max((v for _, _, vals in series for v in vals if math.isfinite(v)), default=0.0) or 1.0
    for j, (k, color, values) in enumerate(series):
        ys = [g + (j - (per_model - 1) / 2) * height for g in range(len(names))]
        widths = [v if math.isfinite(v) else 0.0 for v in values]
        bars = ax.barh(ys, widths, height * 0.9, color=color, label=f"coverage@{k}")
        texts = [f"{v:.1%}" if math.isfinite(v) else "n/a" for v in values]
        ax.bar_label(bars, labels=texts, fontsize=8, padding=3)
    ax.set_yticks(range(len(names)), [_label(n) for n in names])
    ax.invert_yaxis()  # the first model on top, as in the tables
    ax.set_xlim(0, top * 1.18)  # room for the value labels right of the longest bar
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_title("Catalog coverage@K per model", fontsize=12)
    ax.set_xlabel("share of catalog", fontsize=10)
    ax.tick_params(labelsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    from matplotlib.ticker import PercentFormatter

    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    _legend(fig, per_model)
    note = f"Share of the catalog ({n_catalog} items) that appears in at least one user's top-K list."
    return Chart(heading, fig, note)


def figures(result: Mapping[str, Any]) -> list[Chart]:
    """The report's charts as matplotlib figures (None where a chart is skipped), in page order."""
    models = {str(name): _dict(m) for name, m in _dict(result.get("models")).items()}
    styles = series_styles(list(models))
    ks = _ks(result, models)
    return [
        _plot_curves(models, styles),
        _plot_popularity(models, styles, result.get("catalog_deciles"), ks),
        _plot_coverage(models, ks, _count(_dict(result.get("data")).get("catalog_items"))),
    ]


def _ks(result: Mapping[str, Any], models: Mapping[str, dict[str, Any]]) -> list[int]:
    settings = _dict(result.get("settings"))
    return [int(k) for k in settings.get("ks") or [] if isinstance(k, int)] or _metric_names(models)[1]


# ---------------------------------------------------------------- HTML


def _method_box(result: Mapping[str, Any]) -> str:
    s, d = _dict(result.get("settings")), _dict(result.get("data"))
    protocol, variant = str(result.get("protocol", "n/a")), str(result.get("variant", "n/a"))
    how = PROTOCOLS.get(protocol, "")
    targets = s.get("target_events")
    targets_txt = ", ".join(map(str, targets)) if isinstance(targets, list) and targets else "n/a"
    seen = s.get("filter_seen")
    seen_txt = (
        {
            True: "yes — items a user already interacted with in train are removed from the ranking",
            False: "no — items already seen in train may be recommended and count as hits",
        }[seen]
        if isinstance(seen, bool)
        else "n/a"
    )
    ks_txt = ", ".join(map(str, s.get("ks") or [])) or "n/a"
    curve_txt = ", ".join(map(str, s.get("curve_ks") or [])) or "n/a"
    window = f"{d.get('test_start', 'n/a')} → {d.get('test_end', 'n/a')}"
    catalog = _count(d.get("catalog_items"))
    items = [
        f"<b>Protocol:</b> {escape(protocol)}" + (f" — {escape(how)}" if how else ""),
        f"<b>Variant:</b> {escape(variant)}",
        f"<b>Cutoff:</b> {escape(str(s.get('cutoff', d.get('cutoff', 'n/a'))))}; "
        f"<b>test window:</b> {escape(window)}",
        f"<b>Target events:</b> {escape(targets_txt)}",
        f"<b>Seen items filtered:</b> {escape(seen_txt)}",
        f"<b>K:</b> {escape(ks_txt)} (curves at K = {escape(curve_txt)})",
        f"<b>95% intervals:</b> bootstrap over test users, {escape(_count(s.get('n_boot')))} resamples, "
        f"seed {escape(str(s.get('seed', 'n/a')))}",
        f"<b>Ranking:</b> every model ranks the <i>whole</i> catalog ({escape(catalog)} items) for every test "
        "user — full ranking, never sampled negatives",
    ]
    for where, what in _dict(s.get("filtering")).items():
        items.append(f"<b>Filtered in {escape(str(where))}:</b> {escape(str(what))}")
    shares = [
        _num(_dict(m.get("metrics")).get("repeat_target_share")) for m in _dict(result.get("models")).values()
    ]
    if shares and math.isfinite(shares[0]):
        items.append(
            f"<b>Repeat targets:</b> {shares[0]:.1%} of the targets were touched by the user in training; "
            "recall_repeat / recall_explore are recall on those and on the others, repeat_hit_share the share "
            "of hits that are repeats"
        )
    if d.get("basket"):
        items.append(f"<b>Basket:</b> {escape(str(d['basket']))}; mean target basket "
                     f"{escape(str(d.get('mean_basket_size', 'n/a')))} items")  # fmt: skip
    prep = _dict(d.get("prepare"))
    if prep:
        items.append(
            f"<b>Clean-up ([prepare]) of the training view only:</b> {escape(_count(prep.get('events_removed')))} "
            f"of {escape(_count(prep.get('events_before')))} training events removed; targets never cleaned"
        )
    labels = [
        ("train_events", "train events"),
        ("train_users", "train users"),
        ("train_items", "train items"),
        ("catalog_items", "catalog items"),
        ("test_users", "test users"),
        ("test_targets", "test targets"),
    ]
    counts = "".join(f"<div><b>{escape(_count(d.get(k)))}</b>{escape(lbl)}</div>" for k, lbl in labels)
    lis = "".join(f"<li>{i}</li>" for i in items)
    return f'<div class="box"><b>Exactly how these numbers were made</b><ul>{lis}</ul><div class="counts">{counts}</div></div>'


def _metrics_tables(models: Mapping[str, dict[str, Any]]) -> str:
    names, ks = _metric_names(models)
    if not names:
        return '<p class="note">No metric values in this result.</p>'
    out = []
    for k in ks:
        cols = [n for n in names if any(f"{n}@{k}" in _dict(m.get("metrics")) for m in models.values())]
        best: dict[str, float] = {}
        for c in cols:
            vals = [_num(_dict(m.get("metrics")).get(f"{c}@{k}")) for m in models.values()]
            finite = [v for v in vals if math.isfinite(v)]
            if len(finite) > 1:  # "best" needs something to beat
                best[c] = min(finite) if c in LOWER_IS_BETTER else max(finite)
        head = "".join(f"<th>{escape(c)}@{k}{' ↓' if c in LOWER_IS_BETTER else ''}</th>" for c in cols)
        rows = []
        for name, model in models.items():
            metrics, ci = _dict(model.get("metrics")), _dict(model.get("ci95"))
            cells = []
            for c in cols:
                v = _num(metrics.get(f"{c}@{k}"))
                txt = escape(_fmt(v))
                if c in best and v == best[c]:
                    txt = f"<b>{txt}</b>"
                iv = ci.get(f"{c}@{k}")
                if isinstance(iv, list) and len(iv) == 2:
                    txt += f"<small>{escape(_fmt(iv[0]))}–{escape(_fmt(iv[1]))}</small>"
                cells.append(f"<td>{txt}</td>")
            wall = _num(model.get("wall_s"))
            wall_txt = f"{wall:.1f}" if math.isfinite(wall) else "n/a"
            rows.append(f"<tr><td>{escape(name)}</td>{''.join(cells)}<td>{wall_txt}</td></tr>")
        out.append(
            f"<h3>K = {k}</h3><table><tr><th>model</th>{head}<th>time (s)</th></tr>{''.join(rows)}</table>"
        )
    legend = (
        "<p class='legend'>Bold: best value per column (highest; lowest for columns marked ↓). "
        "Small text: 95% bootstrap interval. n/a: value missing or not a number.</p>"
    )
    return "".join(out) + legend


def _pct(v: float) -> str:
    """A signed percentage, one decimal below 10 % (so a bound of −0.3 % does not print as −0 %)."""
    return (f"{v:+.1%}" if abs(v) < 0.095 else f"{v:+.0%}").replace("-", "−")


def _pipeline(models: Mapping[str, dict[str, Any]]) -> str | None:
    """The model the runner compared with every other one (it carries ``lift``): the ranked pipeline."""
    return next((n for n, m in models.items() if _dict(m.get("lift"))), None)


def _comparison(models: Mapping[str, dict[str, Any]], pipe: str, other: str, key: str) -> tuple[str, str]:
    """(css class, sentence) for the pipeline against ``other`` on ``key`` from the runner's paired lift."""
    lift = _dict(_dict(models[pipe].get("lift")).get(other)).get(key)  # [point, low, high]
    triple = [_num(v) for v in lift] if isinstance(lift, list) else []
    point, low, high = (triple + [math.nan] * 3)[:3]
    a = _num(_dict(models[pipe].get("metrics")).get(key))
    b = _num(_dict(models.get(other, {}).get("metrics")).get(key))
    values = f"({escape(_fmt(a))} vs {escape(_fmt(b))})"
    p, o, metric = f"<b>{escape(pipe)}</b>", f"<b>{escape(other)}</b>", escape(key.upper())
    if not all(math.isfinite(v) for v in (point, low, high)):
        return (
            "even",
            f"{p} against {o} on {metric} {values}: no paired interval in this result.",
        )
    interval = f"95% interval [{_pct(low)}, {_pct(high)}]"
    if low > 0:
        return "", f"{p} beats {o} by {_pct(point).lstrip('+')} on {metric} {values}, {interval}."
    if high < 0:
        return (
            "worse",
            f"{p} is worse than {o} by {_pct(-point).lstrip('+')} on {metric} {values}, {interval}.",
        )
    return "even", (f"{p} and {o} are <b>not distinguishable</b> on {metric} {values}: {p} {_pct(point)}, "
                    f"{interval} covers 0.")  # fmt: skip


def _verdict(result: Mapping[str, Any], models: Mapping[str, dict[str, Any]], ks: Sequence[int]) -> str:
    key = f"ndcg@{ks[0]}" if ks else "ndcg@10"
    n_users = _num(_dict(result.get("data")).get("test_users"))
    s = _dict(result.get("settings"))
    lines: list[str] = []
    css = "even"
    pipe = _pipeline(models)
    if pipe is not None:
        lifts = _dict(models[pipe].get("lift"))
        ref = next((b for b in BASELINE_ORDER if b in lifts), next(iter(lifts)))
        css, sentence = _comparison(models, pipe, ref, key)
        lines.append(sentence)
        others = [
            n
            for n in lifts
            if n not in (ref, "random")
            and math.isfinite(_num(_dict(models.get(n, {}).get("metrics")).get(key)))
        ]
        best = max(others, key=lambda n: _num(_dict(models[n].get("metrics")).get(key)), default=None)
        if best is not None:
            lines.append("Against the strongest other model: " + _comparison(models, pipe, best, key)[1])
        how = (f"Paired bootstrap over the same {escape(_count(n_users))} test users "
               f"({escape(_count(s.get('n_boot')))} resamples): each resample scores both models on the same "
               "customers, so the interval is that of their difference (as a share of the second model's "
               "value). Not distinguishable: the interval covers 0.")  # fmt: skip
    else:
        scored = {
            n: v for n, m in models.items() if math.isfinite(v := _num(_dict(m.get("metrics")).get(key)))
        }
        if scored:
            best = max(scored, key=lambda n: scored[n])
            lines.append(
                f"<b>{escape(best)}</b> has the highest {escape(key.upper())} ({escape(_fmt(scored[best]))})."
            )
        else:
            lines.append(f"No model has a {escape(key)} value in this result.")
        how = "No paired comparison in this result (the runner makes one for the ranked pipeline)."
    if math.isfinite(n_users) and n_users < MIN_USERS:
        lines.append(f'<span class="warn">⚠ only {int(n_users)} test users (fewer than {MIN_USERS}): '
                     "too few to judge, treat every number below as a rough guide.</span>")  # fmt: skip
    body = "".join(f"<p>{line}</p>" for line in lines)
    return f'<div class="verdict {css}" id="verdict">{body}<small>{how} <a href="#method">How these numbers were made</a>.</small></div>'


def _few(n: float) -> bool:
    return math.isfinite(n) and n < MIN_USERS


def _users_txt(n: float, unit: bool = True) -> str:
    """A user count, flagged when below `MIN_USERS`; ``unit``: with the word "users"."""
    if not math.isfinite(n):
        return "n/a"
    txt = f"{int(n):,}" + (f" user{'s' if n != 1 else ''}" if unit else "")
    return f'{txt} <span class="warn">⚠ too few</span>' if _few(n) else txt


def _shown_models(models: Mapping[str, dict[str, Any]], key: str) -> list[str]:
    """Every model when few; else the pipeline, the popularity baselines and the best of the others."""
    names = list(models)
    if len(names) <= MAX_BREAKDOWN_MODELS:
        return names
    keep = [n for n in [_pipeline(models), "popular", "popular-recent"] if n in models]
    rest = sorted((n for n in names if n not in keep),
                  key=lambda n: -_num(_dict(models[n].get("metrics")).get(key)) if math.isfinite(
                      _num(_dict(models[n].get("metrics")).get(key))) else math.inf)  # fmt: skip
    keep += rest[: MAX_BREAKDOWN_MODELS - len(keep)]
    return [n for n in names if n in keep]


def _state_table(models: Mapping[str, dict[str, Any]], ks: Sequence[int]) -> str:
    by_state = {name: bs for name, m in models.items() if (bs := _dict(m.get("by_state")))}
    found = {s for states in by_state.values() for s in states}
    states = [s for s in STATE_ORDER if s in found] + sorted(found - set(STATE_ORDER))
    if not states:
        return '<p class="note">Skipped: this result has no per-visitor-state breakdown (by_state).</p>'
    keys = {str(k) for st in by_state.values() for row in st.values() for k in _dict(row)} - {"users"}
    metrics = [m for m in [f"ndcg@{k}" for k in ks[:1]] + [f"recall@{k}" for k in ks[:1]] if m in keys]
    metrics = metrics or sorted(keys)[:2]
    if not metrics:
        return '<p class="note">Skipped: by_state holds no metric values.</p>'
    users = {s: max((_num(_dict(st.get(s)).get("users")) for st in by_state.values()), default=math.nan,
                    key=lambda v: v if math.isfinite(v) else -1.0) for s in states}  # fmt: skip
    head = "".join(
        f'<th colspan="{len(metrics)}">{escape(s)}<small>{_users_txt(users[s])}</small></th>' for s in states
    )
    sub = "".join(f"<th>{escape(m)}</th>" for _ in states for m in metrics)
    rows = []
    for name, st in by_state.items():
        cells = []
        for s in states:
            row = _dict(st.get(s))
            few = ' class="few"' if _few(users[s]) else ""
            cells += [f"<td{few}>{escape(_fmt(row.get(m)))}</td>" for m in metrics]
        rows.append(f"<tr><td>{escape(name)}</td>{''.join(cells)}</tr>")
    flagged = [s for s in states if _few(users[s])]
    warn = (f'<p class="note">⚠ {escape(", ".join(flagged))}: fewer than {MIN_USERS} test users — the values '
            "(grey) swing with one or two customers and say little.</p>" if flagged else "")  # fmt: skip
    return (f'<table id="by-state"><tr><th rowspan="2">model</th>{head}</tr><tr>{sub}</tr>{"".join(rows)}</table>'
            f'{warn}<p class="legend">Each test user by their state at the cutoff: new (no history), returning '
            "(no purchase yet), buyer.</p>")  # fmt: skip


def _category_table(
    result: Mapping[str, Any], models: Mapping[str, dict[str, Any]], ks: Sequence[int]
) -> str:
    counts = {str(c): _dict(v) for c, v in _dict(result.get("categories")).items()}
    with_cat = {n: bc for n, m in models.items() if (bc := _dict(m.get("by_category")))}
    if not counts or not with_cat:
        return '<p class="note">Skipped: this result has no per-category breakdown (by_category).</p>'
    k = ks[0] if ks else 10
    shown = [n for n in _shown_models(models, f"recall@{k}") if n in with_cat]
    cats = sorted(counts, key=lambda c: (-_num(counts[c].get("targets")), c))
    head = "".join(f"<th>{escape(n)}</th>" for n in shown)
    rows = []
    for c in cats:
        n_users = _num(counts[c].get("users"))
        tr = '<tr class="few">' if _few(n_users) else "<tr>"
        cells = "".join(f"<td>{escape(_share(_dict(with_cat[n]).get(c)))}</td>" for n in shown)
        rows.append(f"{tr}<td>{escape(c)}</td>"
                    f"<td>{escape(_count(counts[c].get('targets')))}</td><td>{_users_txt(n_users, unit=False)}</td>{cells}</tr>")  # fmt: skip
    left = len(models) - len(shown)
    more = f" {left} more model(s) are in the --json result." if left > 0 else ""
    flagged = sum(_few(_num(counts[c].get("users"))) for c in cats)
    warn = (f'<p class="note">⚠ {flagged} categor{"y has" if flagged == 1 else "ies have"} fewer than '
            f"{MIN_USERS} test users: their values (grey) say little.</p>" if flagged else "")  # fmt: skip
    return (f'<table id="by-category"><tr><th>category of the purchased item</th><th>targets</th><th>users</th>{head}</tr>'
            f'{"".join(rows)}</table>{warn}<p class="legend">Share of the test targets in each category that the model '
            f"had in the customer's top {k}.{more}</p>")  # fmt: skip


def _share(value: Any) -> str:
    v = _num(value)
    return f"{v:.1%}" if math.isfinite(v) else "n/a"


def _examples(result: Mapping[str, Any]) -> str:
    ex = _dict(result.get("examples"))
    customers = [c for c in ex.get("customers") or [] if isinstance(c, Mapping)]
    if not customers:
        return '<p class="note">Skipped: this result has no example customers.</p>'
    model = escape(str(ex.get("model", "the model")))

    def name(row: Mapping[str, Any]) -> str:
        return escape(str(row.get("name") or row.get("item_id") or "?"))

    out = []
    for c in customers:
        hist = [_dict(r) for r in c.get("history") or []]
        recs = [_dict(r) for r in c.get("recommended") or []]
        bought = [_dict(r) for r in c.get("targets") or []]
        h = "".join(
            f"<li>{name(r)} <small>{escape(str(r.get('event_type', '')))} · {escape(str(r.get('ts', '')))}</small></li>"
            for r in hist
        )
        r_ = "".join(
            f'<li class="hit">{name(r)} <small>✓ bought</small></li>'
            if r.get("hit")
            else f"<li>{name(r)}</li>"
            for r in recs
        )
        b = "".join(f"<li>{name(r)}</li>" for r in bought)
        n_hits = sum(bool(r.get("hit")) for r in recs)
        state = f" · {escape(str(c['state']))}" if c.get("state") else ""
        out.append(
            f'<div class="customer"><h3>Customer {escape(str(c.get("user", "?")))}{state} — '
            f"{n_hits} of {len(recs)} recommendations bought</h3><div class=\"cols\">"
            f"<div><h4>Recent activity (before the cutoff)</h4>{f'<ol>{h}</ol>' if h else '<p class=none>none</p>'}</div>"
            f"<div><h4>Top {len(recs)} from {model}</h4>{f'<ol>{r_}</ol>' if r_ else '<p class=none>no list</p>'}</div>"
            f"<div><h4>Bought in the test window</h4>{f'<ul>{b}</ul>' if b else '<p class=none>nothing</p>'}</div>"
            "</div></div>"
        )  # fmt: skip
    note = ("<p class='legend'>Customers drawn at random (seeded) among the test users with at least three "
            "earlier events — not picked to look good. Names: the item title, else brand · category.</p>")  # fmt: skip
    return f'<div id="examples">{"".join(out)}</div>{note}'


def render_report(result: Mapping[str, Any]) -> str:
    """The report page as an HTML string (see :func:`write_report`)."""
    models = {str(name): _dict(m) for name, m in _dict(result.get("models")).items()}
    ks = _ks(result, models)
    dataset, protocol = str(result.get("dataset", "unknown dataset")), str(result.get("protocol", "n/a"))
    variant = str(result.get("variant", "n/a"))
    made = str(result.get("created_at") or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    title = f"Offline evaluation — {dataset} · {protocol} / {variant} · {made[:10]}"
    sub = f"Evaluated {made} · {len(models)} model(s): {', '.join(models) or 'none'}"
    parts = [f"<h1>{escape(title)}</h1>", f'<p class="sub">{escape(sub)}</p>', _verdict(result, models, ks)]
    parts += ["<h2>Example customers</h2>", _examples(result)]
    parts += ["<h2>By category</h2>", _category_table(result, models, ks)]
    parts += ["<h2>By visitor state</h2>", _state_table(models, ks)]
    parts += ["<h2>Metrics</h2>", _metrics_tables(models)]
    for chart in figures(result):
        parts.append(f"<h2>{escape(chart.heading)}</h2>")
        if chart.figure is None:
            parts.append(f'<p class="note">{escape(chart.note)}</p>')
        else:
            png = _png(chart.figure)
            parts.append(
                f'<img src="data:image/png;base64,{png}" alt="{escape(chart.heading)}">'
                f'<p class="legend">{escape(chart.note)}</p>'
            )
    parts += ['<h2 id="method">How these numbers were made</h2>', _method_box(result)]
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body><main>\n{body}\n</main></body></html>\n"
    )


def write_report(result: Mapping[str, Any], path: Path) -> Path:
    """Write the self-contained HTML report for an evaluation ``result`` to ``path``; return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(result), encoding="utf-8")
    return path
