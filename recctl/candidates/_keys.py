"""Integer-key helpers of ``affinity.for_users``: its candidates are (user, item) pairs built with numpy
from integer codes (the expansion of each user's groups into their items, a sort-distinct, lookups of
the user's affinity per group) instead of polars joins of millions of rows per chunk of users."""

from __future__ import annotations

import numpy as np
import polars as pl

_TABLE_CELLS = 8_000_000  # a dense (users of a chunk × group codes) affinity lookup up to this size


def sorted_pairs(pairs: pl.DataFrame, code: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes, items) of (code, item index) pairs sorted by code."""
    c = pairs[code].to_numpy().astype(np.int64)
    order = np.argsort(c, kind="stable")
    return c[order], pairs["i"].to_numpy().astype(np.int64)[order]


def expand(
    shares: pl.DataFrame, code: str, codes: np.ndarray, item_ix: np.ndarray, n_items: int
) -> np.ndarray:
    """``u * n_items + i`` of every (user of ``shares``, item of one of their group codes): the inner join
    of the shares with the group's items, as integer keys."""
    u = shares["u"].to_numpy().astype(np.int64)
    c = shares[code].to_numpy().astype(np.int64)
    lo, hi = np.searchsorted(codes, c, "left"), np.searchsorted(codes, c, "right")
    counts = hi - lo
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(counts) - counts
    at = np.repeat(lo - offsets, counts) + np.arange(total)
    keys: np.ndarray = np.repeat(u, counts) * n_items + item_ix[at]
    return keys


def distinct(keys: np.ndarray) -> np.ndarray:
    """The sorted distinct ``keys`` (a sort and a diff: numpy's hash-based unique took 20 s here)."""
    keys = np.sort(keys)
    return keys[np.r_[True, keys[1:] != keys[:-1]]] if keys.size else keys


def member(key: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Whether each of ``key`` is in ``sorted_keys``."""
    at = np.searchsorted(sorted_keys, key).clip(0, sorted_keys.size - 1)
    found: np.ndarray = sorted_keys[at] == key
    return found


def lookup(shares: pl.DataFrame, group: str, u: np.ndarray, item_code: np.ndarray) -> pl.Series:
    """Per candidate (user ``u``, the item's code of ``group``, NaN = none): the user's affinity for that
    group value, null where they have none (the left join it replaces). A dense (users of the chunk ×
    codes) table when it is small, else a search in the sorted (user, code) keys."""
    su = shares["u"].to_numpy().astype(np.int64)
    sc = shares[f"{group}_c"].to_numpy().astype(np.int64)
    vals = shares[f"s_{group}"].to_numpy().astype(np.float64)
    known = ~np.isnan(item_code)
    code = np.where(known, item_code, 0).astype(np.int64)
    out = np.full(u.size, np.nan)
    if su.size == 0 or u.size == 0:
        return pl.Series(out, dtype=pl.Float64, nan_to_null=True)
    lo = int(min(su.min(), u.min()))
    width = int(max(sc.max(), code.max())) + 1
    height = int(max(su.max(), u.max())) - lo + 1
    if height * width <= _TABLE_CELLS:
        table = np.full((height, width), np.nan)
        table[su - lo, sc] = vals
        out = np.where(known, table[u.astype(np.int64) - lo, code], np.nan)
    else:
        skey = su * width + sc
        order = np.argsort(skey, kind="stable")
        skey, vals = skey[order], vals[order]
        ckey = u.astype(np.int64) * width + code
        found = known & member(ckey, skey)
        at = np.searchsorted(skey, ckey).clip(0, skey.size - 1)
        out = np.where(found, vals[at], np.nan)
    return pl.Series(out, dtype=pl.Float64, nan_to_null=True)
