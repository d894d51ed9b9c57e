"""``[resources]``: the memory budget and thread count of one recctl process, and what each library gets.

One setting per resource, derived for every consumer (no second knob that could contradict it):

- **threads**: DuckDB's ``threads``, polars' thread pool (``POLARS_MAX_THREADS``, read once when polars
  is first imported), the BLAS / OpenMP pools of numpy, scipy and LightGBM (``OMP_NUM_THREADS`` and
  friends, same rule) and LightGBM's ``n_jobs`` when ``[ranker] params.threads`` is not set. Default: the
  cores this process may run on.
- **memory**: the whole process's budget. DuckDB's ``memory_limit`` is ``DUCKDB_SHARE`` of it (DuckDB
  spills to ``temp_dir`` beyond that; its buffer pool would otherwise keep up to 80 % of RAM); the rest is
  for the frames and matrices of features and models, whose item-side caps read ``budget()``. Default: no
  budget (DuckDB's own default, models unbounded).
- **temp_dir**: where DuckDB spills (default: DuckDB's, ``<warehouse>.tmp`` beside the file).

``apply_process(cfg)`` sets the environment variables before the libraries are imported (the CLI calls it
once the config is loaded); a library user calls it first. Environment variables already set by the
user win (they are the operator's own override of the same thing).
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

    from recctl.config import RecctlConfig

#: DuckDB's share of ``[resources] memory``: ingest is DuckDB alone and spills beyond it; train and
#: evaluate read the events once through DuckDB and then need the rest for frames and models.
DUCKDB_SHARE = 0.5
#: The thread pools of the numeric libraries, read from the environment when each is first imported.
THREAD_VARIABLES = ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$", re.IGNORECASE)
_FACTOR = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
           "tib": 2**40}  # fmt: skip
#: Below this DuckDB cannot pin the blocks of a small scan (twice: DuckDB gets half the budget).
MIN_MEMORY = 32 * 2**20
_state: dict[str, int | None] = {"threads": None, "memory": None}


def parse_size(text: str) -> int:
    """'16GB', '500MB', '2GiB', '1e9' bytes, or 'N%' of this machine's RAM → bytes (ValueError otherwise)."""
    s = str(text).strip()
    if s.endswith("%"):
        share = float(s[:-1])
        if not 0 < share <= 100:
            raise ValueError(f"not a share of RAM between 0 and 100%: {text!r}")
        return int(ram_bytes() * share / 100)
    m = _SIZE.match(s)
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. '16GB', '500MB' or '50%')")
    return int(float(m.group(1)) * _FACTOR[(m.group(2) or "b").lower()])


def ram_bytes() -> int:
    """This machine's RAM in bytes."""
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cores() -> int:
    """Threads for a numeric library that takes a count: ``[resources] threads`` once applied, else the
    process's cores."""
    return _state["threads"] or machine_cores()


def budget() -> int | None:
    """``[resources] memory`` in bytes once applied (None: no budget). Item-side model caps read it."""
    return _state["memory"]


def duckdb_memory(memory: str | None) -> str | None:
    """DuckDB's ``memory_limit`` for a ``[resources] memory`` value (None: DuckDB's default)."""
    if not memory:
        return None
    return f"{max(1, parse_size(memory) * DUCKDB_SHARE // 2**20):.0f}MiB"


def configure_private(con: duckdb.DuckDBPyConnection) -> None:
    """The applied ``[resources]`` on a private in-memory DuckDB connection (features' SQL session, the
    ``files`` protocol's scratch warehouse): the same threads and DuckDB share of the budget as the
    warehouse's connections, which ``apply_settings`` gives from the config."""
    if _state["threads"]:
        con.execute(f"SET threads = {int(_state['threads'])}")
    if _state["memory"]:
        mib = max(1, int(_state["memory"] * DUCKDB_SHARE) // 2**20)
        con.execute(f"SET memory_limit = '{mib}MiB'")


def apply_process(cfg: RecctlConfig) -> list[str]:
    """Make this process follow ``cfg.resources``: remember the budget and thread count, and set the
    numeric libraries' thread variables that the user has not set. Returns the variables that could not
    take effect because their library was already imported (the caller may warn; nothing breaks)."""
    res = cfg.resources
    _state["threads"] = res.threads
    _state["memory"] = parse_size(res.memory) if res.memory else None
    late: list[str] = []
    if res.threads is None:
        return late
    for var in THREAD_VARIABLES:
        if var in os.environ:
            continue
        os.environ[var] = str(res.threads)
        module = "polars" if var.startswith("POLARS") else "numpy"
        if module in sys.modules:
            late.append(var)
    return late
