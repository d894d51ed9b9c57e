"""The offline-evaluation HTML report: self-contained, escaped, robust to missing pieces."""

from __future__ import annotations

import base64
import copy
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from recctl.evaluate.report import write_report

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
    return {
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
            "pipeline": _model(2.1, 0.45, 38.7),
        },
    }


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
    assert len(images) >= 4
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
    assert len(_images(html)) >= 4
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
    assert "by_state" in html and "Skipped" in html  # the per-state plot is replaced by a note
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
    assert len(_images(html)) == 4
    assert "Skipped" not in html


def test_report_survives_a_bare_result(tmp_path: Path) -> None:
    html = write_report({"models": {"m": {}}}, tmp_path / "bare.html").read_text(encoding="utf-8")
    assert "<td>m</td>" not in html  # no metrics at all: a note instead of a table
    assert html.count('class="note"') >= 4
    html = write_report({}, tmp_path / "empty.html").read_text(encoding="utf-8")
    assert "Offline evaluation" in html
    _assert_self_contained(html)


def test_matplotlib_not_loaded_on_import() -> None:
    code = "import sys, recctl.evaluate.report; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
