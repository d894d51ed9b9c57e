"""Self-contained HTML report for one offline evaluation result.

``write_report(result, path)`` writes a single page that needs no network: the CSS is inline, the plots are
embedded as base64 PNG ``data:`` images and every piece of text is HTML-escaped, so it reads the same from
disk and in mail. matplotlib is imported lazily (only when a report is written) and driven through
``matplotlib.figure.Figure`` with the Agg canvas: no pyplot state and no global rcParams are touched.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
PROTOCOLS = {
    "temporal": "train on every event before the cutoff, test on each user's target events inside the test window",
    "leave-one-out": "hold out each test user's last target event, train on everything else",
    "next-basket": "hold out each test user's last basket of target events, train on everything before it",
}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
CATALOG_COLOR = "#9e9e9e"
K_COLORS = ("#9ecae1", "#4292c6", "#08519c", "#08306b")  # blues, light to dark, one per K
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#222;margin:0;background:#fff}
main{max-width:1140px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin:0 0 16px}.note{color:#8a5a00;background:#fff8e5;padding:6px 10px;border-radius:4px}
.box{background:#f4f7fb;border-left:4px solid #4a78b0;padding:10px 16px;border-radius:4px}
.box ul{margin:4px 0;padding-left:20px}.counts{display:flex;flex-wrap:wrap;gap:8px;margin-top:10px}
.counts div{background:#fff;border:1px solid #d8e0ea;border-radius:4px;padding:4px 10px}
.counts b{display:block;font-size:16px}
table{border-collapse:collapse;width:100%;font-size:13px;margin:6px 0}
th,td{padding:5px 5px;border-bottom:1px solid #e4e4e4;text-align:right;vertical-align:top}
th{background:#f2f2f2;font-weight:600;font-size:12px}th:first-child,td:first-child{text-align:left;white-space:nowrap}
td small{display:block;color:#777;font-size:11px;white-space:nowrap}
img{display:block;width:100%;height:auto;margin:6px 0}.legend{color:#666;font-size:12px}
"""


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


def _grouped_bars(
    ax: Axes, groups: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]], value_labels: bool
) -> None:
    """One bar per series in each group; NaN bars are drawn empty and labelled n/a."""
    width = 0.84 / max(len(series), 1)
    for i, (name, color, values) in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [v if math.isfinite(v) else 0.0 for v in values]
        bars = ax.bar(xs, heights, width * 0.95, color=color, label=_label(name))
        if value_labels or not all(math.isfinite(v) for v in values):
            texts = [(f"{v:.3f}" if value_labels else "") if math.isfinite(v) else "n/a" for v in values]
            ax.bar_label(bars, labels=texts, fontsize=8, padding=2)
    ax.set_xticks(range(len(groups)), [_label(g) for g in groups])
    pad = max(0.0, (3 - len(groups)) / 2)  # keep bars from filling the whole width when there are few groups
    ax.set_xlim(-0.5 - pad, len(groups) - 0.5 + pad)
    ax.margins(y=0.12)


def _plot_curves(models: Mapping[str, dict[str, Any]], colors: Mapping[str, str]) -> tuple[str | None, str]:
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
        return None, "Skipped: no model has recall@K / ndcg@K curve values."
    fig = _figure(10.4, 3.7)
    axes = fig.subplots(1, 2)
    for ax, (metric, lines) in zip(axes, series.items(), strict=True):
        for name, xs, ys in lines:
            ax.plot(xs, ys, marker="o", lw=2, ms=5, color=colors[name], label=_label(name))
        _style(ax, f"{metric}@K", metric)
        ax.set_xscale("log")
        ax.set_xticks(sorted(all_ks), [str(k) for k in sorted(all_ks)])
        ax.minorticks_off()
        ax.set_xlabel("K (log scale)", fontsize=10)
        ax.set_ylim(bottom=0)
    legend = {lbl: h for ax in axes for h, lbl in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(list(legend.values()), list(legend), loc="outside right upper", fontsize=10, frameon=False)
    return _png(fig), "Each model's metric as the list length K grows (all test users, full-catalog ranking)."


def _plot_popularity(
    models: Mapping[str, dict[str, Any]], colors: Mapping[str, str], catalog: Any, ks: Sequence[int]
) -> tuple[str | None, str]:
    from matplotlib.ticker import PercentFormatter

    series: list[tuple[str, str, Sequence[float]]] = []
    if isinstance(catalog, list) and catalog:
        series.append(("catalog (train interactions)", CATALOG_COLOR, [_num(v) for v in catalog]))
    n = len(series[0][2]) if series else 10
    for name, model in models.items():
        deciles = model.get("pop_deciles")
        if isinstance(deciles, list) and len(deciles) == n:
            series.append((name, colors[name], [_num(v) for v in deciles]))
    if not series or all(not math.isfinite(v) for _, _, vals in series for v in vals):
        return None, "Skipped: no popularity-decile data in this result."
    fig = _figure(10.4, 3.5)
    ax = fig.subplots()
    _grouped_bars(ax, [str(i + 1) for i in range(n)], series, value_labels=False)
    _style(ax, "Where recommendations fall on the popularity curve", "share")
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_xlabel(
        "item popularity decile in train (1 = most popular 10% of items … 10 = least popular)", fontsize=10
    )
    fig.legend(loc="outside right upper", fontsize=10, frameon=False)
    top = f"top-{ks[0]}" if ks else "top-K"
    note = f"Grey: share of train interactions per decile; colours: share of each model's {top} items per decile."
    return _png(fig), note


def _plot_coverage(
    models: Mapping[str, dict[str, Any]], ks: Sequence[int], n_catalog: str
) -> tuple[str | None, str]:
    names = list(models)
    series: list[tuple[str, str, Sequence[float]]] = []
    for i, k in enumerate(ks):
        values = [_num(_dict(models[m].get("metrics")).get(f"coverage@{k}")) for m in names]
        if any(math.isfinite(v) for v in values):
            series.append((f"coverage@{k}", K_COLORS[min(i, len(K_COLORS) - 1)], values))
    if not series:
        return None, "Skipped: no coverage@K values in this result."
    fig = _figure(10.4, 3.2)
    ax = fig.subplots()
    _grouped_bars(ax, names, series, value_labels=True)
    _style(ax, "Catalog coverage@K per model", "share of catalog")
    if len(names) > 5 or max(len(n) for n in names) > 18:
        ax.tick_params(axis="x", labelrotation=15)
    fig.legend(loc="outside right upper", fontsize=10, frameon=False)
    note = f"Share of the catalog ({n_catalog} items) that appears in at least one user's top-K list."
    return _png(fig), note


def _plot_states(
    models: Mapping[str, dict[str, Any]], colors: Mapping[str, str], ks: Sequence[int]
) -> tuple[str | None, str]:
    by_state = {name: bs for name, m in models.items() if (bs := _dict(m.get("by_state")))}
    found = {s for states in by_state.values() for s in states}
    states = [s for s in STATE_ORDER if s in found] + sorted(found - set(STATE_ORDER))
    if not states:
        return None, "Skipped: this result has no per-visitor-state breakdown (by_state)."
    keys = {str(k) for st in by_state.values() for row in st.values() for k in _dict(row)} - {"users"}
    preferred = [f"ndcg@{k}" for k in ks] + [f"recall@{k}" for k in ks] + sorted(keys)
    metric = next((k for k in preferred if k in keys), "")
    series = [
        (name, colors[name], [_num(_dict(st.get(s)).get(metric)) for s in states])
        for name, st in by_state.items()
    ]
    if not any(math.isfinite(v) for _, _, values in series for v in values):
        return None, "Skipped: by_state holds no metric values."
    labels = []
    for s in states:
        counts = sorted(
            {c for st in by_state.values() if math.isfinite(c := _num(_dict(st.get(s)).get("users")))}
        )
        n = (
            f"{counts[0]:,.0f}" + (f"–{counts[-1]:,.0f}" if counts[-1] != counts[0] else "")
            if counts
            else "n/a"
        )
        labels.append(f"{s}\n({n} users)")
    fig = _figure(10.4, 3.4)
    ax = fig.subplots()
    _grouped_bars(ax, labels, series, value_labels=True)
    _style(ax, f"{metric} by visitor state", metric)
    fig.legend(loc="outside right upper", fontsize=10, frameon=False)
    return _png(fig), f"{metric} split by the test user's state at the cutoff; user counts under each group."


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


def render_report(result: Mapping[str, Any]) -> str:
    """The report page as an HTML string (see :func:`write_report`)."""
    models = {str(name): _dict(m) for name, m in _dict(result.get("models")).items()}
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(models)}
    settings, data = _dict(result.get("settings")), _dict(result.get("data"))
    ks = [int(k) for k in settings.get("ks") or [] if isinstance(k, int)] or _metric_names(models)[1]
    dataset, protocol = str(result.get("dataset", "unknown dataset")), str(result.get("protocol", "n/a"))
    variant = str(result.get("variant", "n/a"))
    made = str(result.get("created_at") or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    title = f"Offline evaluation — {dataset} · {protocol} / {variant} · {made[:10]}"
    sub = f"Evaluated {made} · {len(models)} model(s): {', '.join(models) or 'none'}"
    parts = [f"<h1>{escape(title)}</h1>", f'<p class="sub">{escape(sub)}</p>']
    parts += [_method_box(result), "<h2>Metrics</h2>", _metrics_tables(models)]
    plots = [
        ("Accuracy vs. list length", _plot_curves(models, colors)),
        (
            "Popularity of recommended items",
            _plot_popularity(models, colors, result.get("catalog_deciles"), ks),
        ),
        ("Catalog coverage", _plot_coverage(models, ks, _count(data.get("catalog_items")))),
        ("By visitor state", _plot_states(models, colors, ks)),
    ]
    for heading, (png, note) in plots:
        parts.append(f"<h2>{escape(heading)}</h2>")
        if png is None:
            parts.append(f'<p class="note">{escape(note)}</p>')
        else:
            alt = escape(heading)
            parts.append(
                f'<img src="data:image/png;base64,{png}" alt="{alt}"><p class="legend">{escape(note)}</p>'
            )
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
