"""``[resources]``: one memory budget and thread count, from which DuckDB's, polars', BLAS's and LightGBM's
settings are derived (never a second knob that could contradict them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recctl import resources
from recctl.config import load_config
from recctl.errors import ConfigError
from recctl.warehouse import open_reader, open_writer


def test_sizes() -> None:
    assert resources.parse_size("16GB") == 16 * 10**9
    assert resources.parse_size("500 MiB") == 500 * 2**20
    assert resources.parse_size("1024") == 1024
    assert resources.parse_size("50%") == resources.ram_bytes() // 2
    for bad in ("lots", "GB", "0%", "101%", "-5GB"):
        with pytest.raises(ValueError):
            resources.parse_size(bad)
    assert resources.duckdb_memory(None) is None
    assert resources.duckdb_memory("2GiB") == "1024MiB"  # DuckDB's share is half the budget


def test_duckdb_gets_its_share_threads_and_temp_dir(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    cfg = load_config(
        environ={},
        overrides={
            "warehouse": {"path": str(tmp_path / "w.duckdb")},
            "resources": {"memory": "2GiB", "threads": 1, "temp_dir": str(spill)},
        },
    )
    with open_writer(cfg, "test") as wh:
        got = dict(
            wh.con.sql(
                "SELECT name, value FROM duckdb_settings() "
                "WHERE name IN ('memory_limit', 'threads', 'temp_directory')"
            ).fetchall()
        )
    assert got["threads"] == "1"
    assert got["memory_limit"].startswith("1.0 GiB") or got["memory_limit"] == "1024.0 MiB", got
    assert Path(got["temp_directory"]) == spill
    with open_reader(cfg) as wh:  # readers follow the same settings
        (limit,) = wh.con.sql("SELECT current_setting('memory_limit')").fetchall()[0]
    assert limit == got["memory_limit"]


def test_the_process_follows_threads_unless_the_operator_set_a_variable(tmp_path: Path) -> None:
    """A fresh process: after the config is applied, polars' pool and BLAS's take the configured count;
    a variable the operator exported wins; the ranker's LightGBM n_jobs follows ``cores()``."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[resources]\nthreads = 1\nmemory = '3GB'\n")
    script = (
        "import json, os, sys\n"
        "from recctl import resources\n"
        "from recctl.config import load_config\n"
        "late = resources.apply_process(load_config(__import__('pathlib').Path(sys.argv[1])))\n"
        "import polars as pl\n"
        "print(json.dumps({'polars': pl.thread_pool_size(), 'omp': os.environ['OMP_NUM_THREADS'],\n"
        "  'cores': resources.cores(), 'budget': resources.budget(), 'late': late}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in resources.THREAD_VARIABLES}
    out = subprocess.run([sys.executable, "-c", script, str(cfg)], env=env, capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert json.loads(out.stdout) == {"polars": 1, "omp": "1", "cores": 1, "budget": 3 * 10**9, "late": []}
    env["OMP_NUM_THREADS"] = "2"
    out = subprocess.run([sys.executable, "-c", script, str(cfg)], env=env, capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert json.loads(out.stdout)["omp"] == "2"


def test_status_shows_the_resources_and_refuses_the_old_keys(tmp_path: Path) -> None:
    cfg = load_config(environ={"RECCTL_RESOURCES__MEMORY": "8GB"})
    assert cfg.resolved()["resources"] == {"memory": "8GB", "threads": None, "temp_dir": None}
    with pytest.raises(ConfigError, match=r"moved to 'resources\.memory'"):
        load_config(environ={"RECCTL_WAREHOUSE__MEMORY_LIMIT": "8GB"})


def test_private_connections_follow_the_applied_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Features' in-memory SQL session gets the same DuckDB share and threads as the warehouse."""
    from datetime import datetime

    from recctl.features.base import session

    monkeypatch.setattr(resources, "_state", {"threads": None, "memory": None})
    cfg = load_config(environ={}, overrides={"resources": {"memory": "2GiB", "threads": 1}})
    monkeypatch.setattr(os, "environ", dict(os.environ))  # apply_process sets the thread variables
    resources.apply_process(cfg)
    with session(datetime(2024, 1, 1), {}) as con:
        got = dict(
            con.sql(
                "SELECT name, value FROM duckdb_settings() WHERE name IN ('memory_limit', 'threads')"
            ).fetchall()
        )
    assert got["threads"] == "1"
    assert got["memory_limit"] in ("1.0 GiB", "1024.0 MiB"), got
