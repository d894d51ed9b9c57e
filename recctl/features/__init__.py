"""The feature store: point-in-time user, item, user×item and context features for the ranker.

``build(events, items, as_of)`` computes every feature from the events strictly before ``as_of``
(SQL run by DuckDB over polars frames, so the warehouse and in-memory training splits share the code);
``pair_features(fs, pairs, context)`` joins them onto (user, candidate item) pairs. ``FEATURES`` names
and documents every column they produce (the list saved with a model); ``registry(windows)`` gives it
for other windows. ``recctl features`` (``store.run_features``) writes the offline tables and the
online snapshot to the warehouse; ``online_user`` / ``online_item`` read one row of the snapshot.
"""

from __future__ import annotations

from recctl.features.base import DEFAULT_WINDOWS, PAGES, Feature, FeatureSet
from recctl.features.build import build
from recctl.features.item import item_features
from recctl.features.pairs import (
    CTX_FEATURES,
    PAIR_FEATURES,
    REPEAT_FEATURES,
    REPEAT_ITEM_FEATURES,
    REPEAT_USER_FEATURES,
    pair_features,
)
from recctl.features.store import load_feature_set, online_item, online_user, run_features
from recctl.features.user import user_features


def feature_list(windows: tuple[int, ...] = DEFAULT_WINDOWS) -> list[Feature]:
    """Every feature ``pair_features`` adds, in column order: u_*, i_*, ui_*, the repeat-purchase ones, ctx_*."""
    ws = tuple(sorted(set(windows)))
    return [
        *user_features(ws), *REPEAT_USER_FEATURES, *item_features(ws), *REPEAT_ITEM_FEATURES,
        *PAIR_FEATURES, *REPEAT_FEATURES, *CTX_FEATURES,
    ]  # fmt: skip


def registry(windows: tuple[int, ...] = DEFAULT_WINDOWS) -> dict[str, str]:
    """Feature name → one-line description, in column order."""
    return {f.name: f.doc for f in feature_list(windows)}


#: Every feature (default windows 1/7/30/90 days) → its one-line description.
FEATURES: dict[str, str] = registry()

__all__ = [
    "FEATURES",
    "PAGES",
    "Feature",
    "FeatureSet",
    "build",
    "feature_list",
    "load_feature_set",
    "online_item",
    "online_user",
    "pair_features",
    "registry",
    "run_features",
]
