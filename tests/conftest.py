"""Shared fixtures: run the CLI in-process, open a warehouse, locate the test data."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from recctl.cli import run
from recctl.config import ENV_NOT_CONFIG

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
BAD = DATA / "bad"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


CliRunner = Callable[..., Result]

#: a stage log line (recctl.progress) as commands write them on stderr off a terminal
STAGE_LOG = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ recctl [^:]+: .* …")


def messages(stderr: str) -> list[str]:
    """stderr's lines without the stage logs: the errors, hints and warnings a person reads."""
    return [ln for ln in stderr.split("\n") if not STAGE_LOG.match(ln)]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """``cli("ingest", "events", path)`` → Result; runs ``recctl`` in this process."""
    for key in [k for k in os.environ if k.startswith("RECCTL_") and k not in ENV_NOT_CONFIG]:
        monkeypatch.delenv(key)

    def _run(*args: str | Path) -> Result:
        capsys.readouterr()
        code = run([str(a) for a in args])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return _run


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``recctl demo --quick`` over sample_data/ (configs/fashion.toml), run once for the whole session: a
    demo project folder with the ingested warehouse, a promoted run and the configs. Tests that write
    train into their own runs_dir."""
    work = tmp_path_factory.mktemp("quick-demo")
    argv = ["--quiet", "demo", "--quick", "--data", str(ROOT / "sample_data"), "--workdir", str(work)]
    assert run(argv) == 0
    return work


@pytest.fixture(scope="module")
def demo_warehouse(quick_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a copy of the quick demo's warehouse, per test module: for tests that train with
    their own runs_dir (a promotion refills the online store of the warehouse it trained on, and the
    session's demo must stay as it is)."""
    folder = tmp_path_factory.mktemp("demo-warehouse")
    shutil.copy(quick_demo / "recctl.duckdb", folder / "recctl.duckdb")
    return folder


@pytest.fixture
def wh(tmp_path: Path) -> Path:
    """A warehouse path in a fresh folder (the file is created by the first command)."""
    return tmp_path / "wh.duckdb"


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [tuple(r) for r in con.sql(sql).fetchall()]
    finally:
        con.close()


def reconciled(report: dict[str, Any]) -> bool:
    return all(
        f["rows_read"] == f["rows_loaded"] + f["rows_rejected"] + f["rows_duplicate"] for f in report["files"]
    )


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 20 MiB tmpfs mounted on a fresh folder (a small disk to fill, or to remount read-only); skips the
    test where mounting is refused; always unmounted."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)]
    if subprocess.run(mount, check=False, capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is refused here")
    try:
        yield mnt
    finally:
        with contextlib.suppress(OSError):
            subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


#: The command line of a recctl child that a test interrupts with SIGINT (``tests/terminal.py``).
AS_FROM_A_TERMINAL = ("-m", "tests.terminal")
