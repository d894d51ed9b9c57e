"""The one small protocol every candidate generator follows, and the registry of kinds.

A generator is fitted on a training frame of interactions (``recctl.data.load_interactions``) and, when
it wants it, the catalog (``recctl.data.load_items``: item_id, title, description, brand, category, price,
original_price, gender, attributes (JSON text), in_stock, created_at, rating, review_count, likes), and then
proposes, for each requested user, up to ``n`` items with a score and a 1-based rank, never an item in
``exclude`` for that user. It saves itself as plain data (parquet / JSON / state dicts) into a folder.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError

from recctl.errors import ConfigError, NotTrainedError

RECS_SCHEMA = {"user_id": pl.String, "item_id": pl.String, "score": pl.Float64, "rank": pl.Int32}


class Params(BaseModel):
    """Base of each generator's parameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@runtime_checkable
class CandidateGenerator(Protocol):
    kind: str
    name: str

    def fit(self, train: pl.DataFrame, *, seed: int, items: pl.DataFrame | None = None) -> None: ...

    def for_users(self, users: pl.Series, n: int, *, exclude: pl.DataFrame | None = None) -> pl.DataFrame: ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path, name: str, params: dict[str, Any]) -> Self: ...


@runtime_checkable
class PairScorer(Protocol):
    """A generator that scores given (anchor, item) pairs with the score its ``for_items`` ranks by.

    Much cheaper than ``for_items`` when only a few pairs matter (the anchor of an explanation: which of a
    visitor's recent items relates most to a recommended one), since nothing is ranked over the catalog.
    """

    def pair_scores(self, anchors: pl.Series, items: pl.Series) -> np.ndarray:
        """float64 scores in the order of the pairs; NaN where either item is unknown or they are equal."""
        ...


Factory = Callable[[str, dict[str, Any]], CandidateGenerator]
_REGISTRY: dict[str, type[Any]] = {}


def register(kind: str) -> Callable[[type[Any]], type[Any]]:
    def deco(cls: type[Any]) -> type[Any]:
        _REGISTRY[kind] = cls
        cls.kind = kind
        return cls

    return deco


def kinds() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def build(kind: str, name: str, params: dict[str, Any]) -> CandidateGenerator:
    """A generator of ``kind`` named ``name``, its params validated (errors name the key)."""
    _load_builtin()
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown candidate kind {kind!r}; known: {', '.join(sorted(_REGISTRY))}")
    cls = _REGISTRY[kind]
    try:
        gen: CandidateGenerator = cls(name, cls.Params.model_validate(params))
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid params for {name} ({kind}): {msgs}") from exc
    return gen


def load_generator(kind: str, path: Path, name: str, params: dict[str, Any]) -> CandidateGenerator:
    """A generator of ``kind`` saved in ``path`` (by its ``save``).

    Whatever a damaged or foreign save makes the reader raise (garbage JSON, a truncated parquet, a torch
    file holding more than tensors, …) becomes one NotTrainedError naming the run and the file. A folder
    with a pickle file in it is refused before anything is read.
    """
    _load_builtin()
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown candidate kind {kind!r}; known: {', '.join(sorted(_REGISTRY))}")
    from recctl.errors import RecctlError
    from recctl.run_files import refuse_pickles, run_root

    refuse_pickles(run_root(path) or path, path)
    try:
        gen: CandidateGenerator = _REGISTRY[kind].load(path, name, params)
    except (RecctlError, MemoryError):
        raise
    except Exception as exc:  # a reader's error on data it did not write: say which file
        raise unloadable(name, path, exc) from exc
    return gen


def unloadable(name: str, path: Path, exc: BaseException) -> NotTrainedError:
    """The error for a saved model that cannot be read back (``recctl.run_files.unloadable``).

    A run saved by an older recctl, cut short by hand or damaged lacks a file, has old params or a file
    that does not parse: say which, instead of a traceback, and tell how to get a usable run.
    """
    from recctl.run_files import unloadable as describe

    return describe(name, path, exc)


def _load_builtin() -> None:
    """Import every module of this package once: importing a module registers its kinds.

    Modules are imported by name only when asked for (heavy ones import torch or scikit-learn inside
    their functions, not at module level), so `recctl recommend` stays fast.
    """
    import importlib
    import pkgutil

    import recctl.candidates as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"recctl.candidates.{info.name}")


def save_frames(path: Path, params: BaseModel, **frames: pl.DataFrame) -> None:
    """A generator's plain-data save: each frame as ``<name>.parquet`` and its params as ``params.json``."""
    import json

    path.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.write_parquet(path / f"{name}.parquet")
    (path / "params.json").write_text(json.dumps(params.model_dump()))


def read_frames(path: Path, *names: str) -> list[pl.DataFrame]:
    """The frames ``save_frames`` wrote (a missing one raises FileNotFoundError: ``unloadable``)."""
    return [pl.read_parquet(path / f"{name}.parquet") for name in names]


def rank_top(scored: pl.DataFrame, n: int, exclude: pl.DataFrame | None) -> pl.DataFrame:
    """Keep each user's ``n`` best (user_id, item_id, score) rows not in ``exclude``; ties by item_id."""
    if exclude is not None and exclude.height:
        scored = scored.join(exclude.select("user_id", "item_id"), on=["user_id", "item_id"], how="anti")
    return (
        scored.sort(["user_id", "score", "item_id"], descending=[False, True, False])
        .with_columns(rank=pl.int_range(1, pl.len() + 1).over("user_id").cast(pl.Int32))
        .filter(pl.col("rank") <= n)
        .select(list(RECS_SCHEMA))
        .cast(RECS_SCHEMA)  # type: ignore[arg-type]
    )


#: users a generator decorated with ``in_user_blocks`` ranks at once (bounds its long-format frames); a
#: multiple of SASRec's score batch (1024), so its batches, and so its float scores, are those of one call
BLOCK_USERS = 4096
ForUsers = Callable[..., pl.DataFrame]


def in_user_blocks(method: ForUsers) -> ForUsers:
    """``for_users`` over at most ``BLOCK_USERS`` users at a time (users sorted, ``exclude`` cut to each
    block), concatenated: for a generator whose list for a user does not depend on the other users asked
    for, the answer of one call, without every user's scored rows (a cross join with the popular list, a
    sparse product's every nonzero, a catalog-wide score row) in memory at once."""

    @functools.wraps(method)
    def blocked(self: Any, users: pl.Series, n: int, *, exclude: pl.DataFrame | None = None) -> pl.DataFrame:
        todo = users.unique().cast(pl.String).sort()
        if todo.len() <= BLOCK_USERS:
            return method(self, users, n, exclude=exclude)
        parts = []
        for lo in range(0, todo.len(), BLOCK_USERS):
            block = todo.slice(lo, BLOCK_USERS)
            ex = (
                None if exclude is None else exclude.join(block.to_frame("user_id"), on="user_id", how="semi")
            )
            parts.append(method(self, block, n, exclude=ex))
        return pl.concat(parts)

    return blocked


def max_excluded(exclude: pl.DataFrame | None) -> int:
    if exclude is None or exclude.height == 0:
        return 0
    top = exclude.group_by("user_id").len()["len"].max()
    return int(top) if isinstance(top, int) else 0


def release_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim``) after a fit: the numpy and
    scipy buffers a fit frees otherwise stay in the process's resident memory and add to the next fit's
    peak (0.25 GB after co-occurrence on Complete Journey). Nothing changes but RSS; a no-op without glibc."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
