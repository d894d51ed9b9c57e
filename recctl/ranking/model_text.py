"""A check of LightGBM's text model format before LightGBM parses it.

LightGBM reads each tree at the byte offset its ``tree_sizes`` header gives, without checking that the
file is that long (a truncated ``ranker.txt`` crashed the process with a segmentation fault), and a
number it cannot parse inside a tree aborts the process ("terminate called without an active
exception": the trees are parsed on OpenMP threads). ``check_model_text`` refuses such a file with
``BadFile`` first: the header, every tree's offset, and in each tree the numbers and their counts, the
child indexes and the split features. A digit changed into another digit still parses: the run's
manifest (``recctl.run_files``) catches that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recctl.run_files import BadFile

# per tree: key → how many numbers it holds, in leaves (N) of the tree: N - 1 for the splits
_INTERNAL = ("split_feature", "split_gain", "threshold", "decision_type", "left_child", "right_child",
             "internal_value", "internal_weight", "internal_count")  # fmt: skip
_LEAF = ("leaf_value", "leaf_weight", "leaf_count")


def _numbers(path: Path, where: str, text: str, *, integer: bool = False) -> np.ndarray:
    try:
        values = np.array(text.split(), dtype=np.float64)
    except ValueError:
        raise BadFile(path, f"is damaged ({where}: not numbers)") from None
    if integer and not np.all(np.isfinite(values) & (values == np.round(values))):
        raise BadFile(path, f"is damaged ({where}: not integers)")
    return values


def _fields(path: Path, where: str, block: bytes) -> dict[str, str]:
    try:
        text = block.decode("ascii")
    except UnicodeDecodeError:
        raise BadFile(path, f"is damaged ({where}: not text)") from None
    out = {}
    for line in text.split("\n"):
        if line.strip():
            key, eq, value = line.partition("=")
            if not eq or not key.replace("_", "").isalnum():
                raise BadFile(path, f"is damaged ({where}: line {line[:30]!r})")
            out[key] = value
    return out


def _check_tree(path: Path, i: int, block: bytes, n_features: int) -> None:
    where = f"tree {i}"
    f = _fields(path, where, block)
    if f.get("Tree") != str(i) or "num_leaves" not in f or "leaf_value" not in f:
        raise BadFile(path, f"is damaged ({where}: missing fields)")
    leaves = _numbers(path, where, f["num_leaves"], integer=True)
    if leaves.size != 1 or leaves[0] < 1:
        raise BadFile(path, f"is damaged ({where}: num_leaves)")
    n = int(leaves[0])
    for key, want in [*((k, n - 1) for k in _INTERNAL), *((k, n) for k in _LEAF)]:
        if n == 1 and key in _INTERNAL:
            continue
        if key not in f and key != "leaf_value":
            continue  # LightGBM versions differ in the optional ones
        got = _numbers(path, f"{where} {key}", f[key], integer=key in ("split_feature", "decision_type",
                       "left_child", "right_child", "leaf_count", "internal_count"))  # fmt: skip
        if got.size != want:
            raise BadFile(path, f"is damaged ({where} {key}: {got.size} values, {want} expected)")
        if key in ("left_child", "right_child") and np.any((got < -n) | (got > n - 2)):
            raise BadFile(path, f"is damaged ({where} {key}: a child out of range)")
        if key == "split_feature" and np.any((got < 0) | (got >= n_features)):
            raise BadFile(path, f"is damaged ({where}: a split on feature out of range)")
    for key in ("num_cat", "shrinkage", "is_linear"):
        if key in f:
            _numbers(path, f"{where} {key}", f[key])
    if int(_numbers(path, where, f.get("num_cat", "0"), integer=True)[:1].sum()) > 0:
        for key in ("cat_boundaries", "cat_threshold"):
            _numbers(path, f"{where} {key}", f.get(key, "x"), integer=True)


def check_model_text(path: Path) -> None:
    """Refuse (``BadFile``) a LightGBM text model that is not whole or whose trees do not parse."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadFile(path, "is missing") from None
    if not data.startswith(b"tree\n"):
        raise BadFile(path, "is not a LightGBM text model (no 'tree' header)")
    start = data.find(b"\nTree=0\n")
    if start < 0:
        raise BadFile(path, "is truncated or damaged (no trees)")
    head = _fields(path, "header", data[len(b"tree\n") : start])
    try:
        n_features = int(head["max_feature_idx"]) + 1
        sizes = [int(v) for v in head["tree_sizes"].split()]
    except (KeyError, ValueError):
        raise BadFile(path, "is damaged (header: max_feature_idx, tree_sizes)") from None
    if len(head.get("feature_names", "").split()) != n_features:
        raise BadFile(path, "is damaged (header: feature_names)")
    at = start + 1
    for i, size in enumerate(sizes):
        if size <= 0 or not data.startswith(b"Tree=%d\n" % i, at) or at + size > len(data):
            raise BadFile(path, f"is truncated or damaged (tree {i} of {len(sizes)})")
        _check_tree(path, i, data[at : at + size], n_features)
        at += size
    if not data.startswith(b"end of trees", at):
        raise BadFile(path, "is truncated or damaged (no 'end of trees' after the last tree)")
