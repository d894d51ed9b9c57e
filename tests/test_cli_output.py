"""Output as scripts and cron logs see it (issue 14, points 3 and 8): data on stdout off a terminal as TSV
or ``key<TAB>value`` lines, --quiet dropping decoration only, global options after the subcommand, and
under --json an error as a JSON document on stdout."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recctl.cli import hoist_globals
from recctl.plain import cell, record, render, tsv
from tests.conftest import BAD, CliRunner

ENV = {k: v for k, v in os.environ.items() if not k.startswith("RECCTL_") and k != "TTY_COMPATIBLE"}
CONFIG = ("--config", "configs/recctl.toml")  # the quick demo's project config, relative to its folder


@pytest.fixture
def demo(quick_demo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The session's quick demo as the current directory (its config's paths are relative); read only."""
    monkeypatch.chdir(quick_demo)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    return quick_demo


def table(text: str) -> tuple[list[str], list[list[str]]]:
    """TSV text as its header and rows; every row has as many cells as the header."""
    header, *rows = [line.split("\t") for line in text.splitlines()]
    assert all(len(r) == len(header) for r in rows), text
    return header, rows


def pairs(text: str) -> dict[str, str]:
    """``key<TAB>value`` lines as a dict; every line has exactly one tab."""
    lines = text.splitlines()
    assert lines and all(line.count("\t") == 1 for line in lines), text
    return dict(line.split("\t") for line in lines)


# -- plain text off a terminal ---------------------------------------------------------------------


def test_status_off_a_terminal_is_key_value_lines_of_the_json_data(cli: CliRunner, demo: Path) -> None:
    doc = cli("--json", *CONFIG, "status").json
    r = cli(*CONFIG, "status")
    assert r.code == 0 and r.stderr == ""
    s = pairs(r.stdout)
    assert s["events.rows"] == str(doc["events"]["rows"]) and s["warehouse"] == doc["warehouse"]
    assert s["events.by_type.purchase"] == str(doc["events"]["by_type"]["purchase"])
    assert s["promoted_run"] == doc["promoted_run"] and s["online_store.fresh"] == "true"
    assert s["writer"] == ""  # None is an empty value, the key is still there


def test_runs_list_and_segments_list_are_tsv_with_a_header(cli: CliRunner, demo: Path) -> None:
    runs = cli("--json", *CONFIG, "runs", "list").json
    header, rows = table(cli(*CONFIG, "runs", "list").stdout)
    assert header == ["run_id", "created_at", "status", "models", "promoted", "problem"]
    assert [r[0] for r in rows] == [r["run_id"] for r in runs] and len(rows) >= 1
    live = [r["promoted"] for r in runs].index(True)
    assert rows[live][4] == "true" and rows[live][3].split("; ") == list(runs[live]["models"])

    segs = cli("--json", *CONFIG, "segments", "list").json
    header, rows = table(cli(*CONFIG, "segments", "list").stdout)
    assert header == ["name", "description", "conditions", "actions", "members"]
    assert [r[0] for r in rows] == [s["name"] for s in segs["segments"]]
    assert [r[4] for r in rows] == [str(s["members"]) for s in segs["segments"]]
    assert rows[0][2] == "; ".join(segs["segments"][0]["conditions"])


def test_quiet_drops_decoration_never_the_data(
    cli: CliRunner, demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = cli(*CONFIG, "runs", "list").stdout
    assert plain and cli("-q", *CONFIG, "runs", "list").stdout == plain
    # on a terminal: the rich table on stderr and no plain text; with --quiet the plain data again
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    human = cli(*CONFIG, "runs", "list")
    assert human.code == 0 and human.stdout == ""
    assert "┃ run" in re.sub(r"\x1b\[[0-9;]*m", "", human.stderr)  # a table with its box
    quiet = cli("--quiet", *CONFIG, "runs", "list")
    assert (quiet.stdout, quiet.stderr) == (plain, "")
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    assert cli(*CONFIG, "runs", "list").stdout == plain


def test_runs_list_redirected_to_a_file_is_not_empty(demo: Path, tmp_path: Path) -> None:
    """A real process with stdout redirected to a file, as ``recctl runs list > runs.txt`` in a cron job."""
    out = tmp_path / "runs.txt"
    with out.open("w") as fh:
        done = subprocess.run([sys.executable, "-m", "recctl", *CONFIG, "runs", "list"], stdout=fh,
                              stderr=subprocess.PIPE, text=True, env=ENV, check=False, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    header, rows = table(out.read_text())
    assert header[0] == "run_id" and rows and rows[0][0].startswith("20")


def test_rejects_are_tsv_with_a_header_even_when_there_are_none(cli: CliRunner, tmp_path: Path) -> None:
    wh = tmp_path / "wh.duckdb"
    assert cli("--warehouse", wh, "ingest", "events", BAD / "dup_within.csv").code == 0
    header, rows = table(cli("--warehouse", wh, "rejects").stdout)
    assert header == ["source_file", "target", "line", "reason", "raw", "ingested_at"] and rows == []
    assert cli("--warehouse", wh, "ingest", "events", BAD / "wrong_types.csv").code == 0
    doc = cli("--json", "--warehouse", wh, "rejects").json
    r = cli("--quiet", "--warehouse", wh, "rejects")
    header, rows = table(r.stdout)
    assert len(rows) == len(doc) == 7 and r.stderr == ""
    assert [row[header.index("reason")] for row in rows] == [d["reason"] for d in doc]
    assert {row[header.index("line")] for row in rows} == {str(d["line"]) for d in doc}


def test_plain_cells_stay_on_one_line() -> None:
    assert cell("a\tb\nc\rd") == "a\\tb\\nc\\rd"
    assert (cell(None), cell(True), cell(False), cell(1.5), cell(["x", "y"])) == (
        "",
        "true",
        "false",
        "1.5",
        "x; y",
    )
    assert cell({"ranked": {"kind": "pipeline"}, "pop": {}}) == "ranked; pop"
    assert tsv([], ["a", "b"]) == "a\tb\n"
    assert tsv([{"a": 1}, {"b": "x\ty"}]) == "a\tb\n1\t\n\tx\\ty\n"
    assert record({"n": 1, "sub": {"k": [1, 2], "e": {}}, "rows": [{"p": "a"}, {"p": "b"}]}) == (
        "n\t1\nsub.k\t1; 2\nsub.e\t\nrows.0.p\ta\nrows.1.p\tb\n"
    )
    assert render([{"a": 1}]) == "a\n1\n" and render({"a": None}) == "a\t\n"


# -- global options anywhere -------------------------------------------------------------------------


def test_global_options_work_after_the_subcommand(cli: CliRunner, demo: Path) -> None:
    before = cli("--json", *CONFIG, "status")
    after = cli("status", "--json", *CONFIG)
    assert after.code == 0 and after.json["events"] == before.json["events"]
    rec = cli("recommend", "--user", "u00001", "--json", "--k", "3", *CONFIG)
    assert rec.code == 0 and [i["rank"] for i in rec.json["items"]] == [1, 2, 3]
    assert cli("runs", "list", "-q", *CONFIG).stdout.startswith("run_id\t")
    assert cli("runs", "--json", "list", *CONFIG).json[0]["run_id"]  # between a group and its subcommand
    assert cli("status", "-qv", "--json", *CONFIG).code == 0
    # status's own --config flag stays its own; followed by a file it is the global --config
    shown = cli("--json", "status", "--config")
    assert shown.code == 0 and "warehouse" in json.loads(shown.stdout)
    assert cli("status", "--config", "configs/recctl.toml", "--json").json["events"] == before.json["events"]


def test_hoisting_keeps_values_and_the_double_dash() -> None:
    assert hoist_globals(["status", "--json"]) == ["--json", "status"]
    assert hoist_globals(["--json", "status"]) == ["--json", "status"]
    assert hoist_globals(["ingest", "events", "f.csv", "--warehouse", "w.duckdb", "-m", "m"]) == [
        "--warehouse", "w.duckdb", "ingest", "events", "f.csv", "-m", "m"]  # fmt: skip
    assert hoist_globals(["recommend", "--user", "--json", "-q"]) == ["-q", "recommend", "--user", "--json"]
    assert hoist_globals(["rerank", "--user", "u", "--", "--json"]) == [
        "rerank",
        "--user",
        "u",
        "--",
        "--json",
    ]
    assert hoist_globals(["status", "--config=c.toml", "--config"]) == [
        "--config=c.toml",
        "status",
        "--config",
    ]
    assert hoist_globals(["status", "--config", "c.toml"]) == ["--config", "c.toml", "status"]
    assert hoist_globals(["segments", "list", "--verbose"]) == ["--verbose", "segments", "list"]
    assert hoist_globals(["no-such-command", "--json"]) == ["no-such-command", "--json"]


# -- errors as JSON under --json ---------------------------------------------------------------------


def test_json_errors_are_a_document_on_stdout(cli: CliRunner, tmp_path: Path) -> None:
    config = cli("status", "--json", "--config", tmp_path / "missing.toml")
    assert config.code == 2 and "recctl: error: config file not found" in config.stderr
    assert config.json == {"error": f"config file not found: {tmp_path / 'missing.toml'}", "hint": None,
                           "exit_code": 2}  # fmt: skip

    usage = cli("recommend", "--json", "--no-such-option")
    assert usage.code == 2 and "No such option" in usage.stderr
    assert usage.json["exit_code"] == 2 and "--no-such-option" in usage.json["error"]
    assert usage.json["hint"] == "recctl recommend --help"
    assert cli("--json", "no-such-command").json["exit_code"] == 2
    assert cli("--json", "runs").json == {
        "error": "missing command",
        "hint": "recctl runs --help",
        "exit_code": 2,
    }

    missing = cli("--json", "--warehouse", tmp_path / "w.duckdb", "ingest", "events", tmp_path / "nope.csv")
    assert missing.code == 66 and missing.json["exit_code"] == 66 and "nope.csv" in missing.json["error"]
    assert "recctl: error:" in missing.stderr and set(missing.json) == {"error", "hint", "exit_code"}

    # a command that made its result before failing: one document, the result with the error in it
    failed = cli(
        "--json", "--warehouse", tmp_path / "w.duckdb", "ingest", "events", BAD / "missing_column.csv"
    )
    assert failed.code == 65 and failed.stdout.count("\n") == 1
    assert failed.json["files"][0]["status"] == "failed" and failed.json["exit_code"] == 65
    assert "required column item_id missing" in failed.json["error"]

    # without --json an error is only the stderr line
    plain = cli("status", "--config", tmp_path / "missing.toml")
    assert plain.code == 2 and plain.stdout == "" and "config file not found" in plain.stderr
