"""A FeatureSet in a run folder (``<pipeline>/features/``): one parquet file per table and ``meta.json``.

``write`` sorts the user-side tables by user_id before writing them and says so in the meta
(``"by_user": true``). ``read`` of such a folder keeps those tables in their files (:class:`StoredFeatures`):
serving asks for the features of a chunk of users at a time (``pair_features`` cuts the set to the pairs'
users first), and a chunk's users are a range of ids, so only the row groups of that range are read
(polars skips the others by their user_id statistics). A batch over a large shop then holds the item
tables and one chunk's user rows, not every user's. A folder written before (unsorted) is read whole.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from recctl.data import read_users
from recctl.features.base import USER_TABLES, FeatureSet


def write(fs: FeatureSet, fdir: Path) -> None:
    """``fs`` into ``fdir``: every table as ``<name>.parquet`` (user-side ones sorted by user), the rest
    (as_of, windows) and ``by_user`` in ``meta.json``."""
    fdir.mkdir(parents=True, exist_ok=True)
    fs = fs.by_user()
    meta: dict[str, Any] = {"by_user": True}
    for f in dataclasses.fields(fs):
        value = getattr(fs, f.name)
        if isinstance(value, pl.DataFrame):
            value.write_parquet(fdir / f"{f.name}.parquet")
        else:
            meta[f.name] = value.isoformat() if isinstance(value, datetime) else value
    (fdir / "meta.json").write_text(json.dumps(meta, indent=1, default=str))


def read(fdir: Path) -> FeatureSet | StoredFeatures:
    """What ``write`` wrote: the user-side tables left in their files when they were written sorted."""
    meta = json.loads((fdir / "meta.json").read_text())
    lazy = bool(meta.get("by_user"))
    values: dict[str, Any] = {}
    for f in dataclasses.fields(FeatureSet):
        file = fdir / f"{f.name}.parquet"
        if file.exists():
            values[f.name] = file if lazy and f.name in USER_TABLES else pl.read_parquet(file)
        elif f.name in meta:
            v = meta[f.name]
            values[f.name] = datetime.fromisoformat(v) if f.name == "as_of" else v
        elif f.default is dataclasses.MISSING:
            raise FileNotFoundError(2, "No such file or directory", str(file))
    if not lazy:
        return FeatureSet(**values).by_user()
    files = {name: values.pop(name) for name in USER_TABLES}
    for file in files.values():  # fail at load, not at the first chunk, on a damaged file
        pl.read_parquet_schema(file)
    return StoredFeatures(values, files)


class StoredFeatures:
    """A FeatureSet whose user-side tables stay in their (user-sorted) parquet files until a chunk of
    users asks for its rows (:meth:`of_users`); the item tables are in memory."""

    def __init__(self, values: dict[str, Any], files: dict[str, Path]) -> None:
        self.values, self.files = values, files

    @property
    def as_of(self) -> datetime:
        as_of: datetime = self.values["as_of"]
        return as_of

    def of_users(self, users: pl.Series) -> FeatureSet:
        """The FeatureSet of ``users``: each user-side table's rows of them, read from the row groups
        between the smallest and the largest id."""
        tables: dict[str, Any] = {name: read_users(file, users) for name, file in self.files.items()}
        return FeatureSet(**self.values, **tables)

    def by_user(self) -> FeatureSet:
        """Every user's rows in memory (sorted, as written): what saving the set again needs."""
        tables: dict[str, Any] = {name: pl.read_parquet(file) for name, file in self.files.items()}
        return FeatureSet(**self.values, **tables).by_user()
