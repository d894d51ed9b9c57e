"""The command line as users' scripts see it: help, exit codes, stdout = data, stderr = people."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
import typer

from recctl.cli import app
from recctl.warehouse.migrations import LATEST
from tests.conftest import BAD, ROOT, CliRunner, query


def command_names() -> list[str]:
    group = typer.main.get_command(app)
    return sorted(group.commands)  # type: ignore[attr-defined]


def test_root_help(cli: CliRunner) -> None:
    r = cli("--help")
    assert r.code == 0
    for name in command_names():
        assert name in r.stdout


@pytest.mark.parametrize("name", command_names())
def test_every_command_has_help_and_is_in_the_readme(cli: CliRunner, name: str) -> None:
    r = cli(name, "--help")
    assert r.code == 0
    text = re.sub(r"\s+", " ", r.stdout)
    assert f"recctl {name}" in text
    group = typer.main.get_command(app)
    command = group.commands[name]  # type: ignore[attr-defined]
    # a real description, not a title line; groups: each subcommand too
    subs = list(getattr(command, "commands", {}).values()) or [command]
    for sub in subs:
        assert len((sub.help or "").split()) >= 6, f"{name} {sub.name} needs a real help text"
        if sub is not command:
            assert cli(name, sub.name, "--help").code == 0
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"recctl {name}" in readme, f"README does not show `recctl {name}`"


def command_paths() -> list[list[str]]:
    """The root, every command and every subcommand, as argv prefixes."""

    def walk(command: object, path: list[str]) -> list[list[str]]:
        subs = getattr(command, "commands", {})
        return [path] + [p for name, sub in subs.items() for p in walk(sub, [*path, name])]

    return walk(typer.main.get_command(app), [])


def _command(path: list[str]) -> object:
    command: object = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


HELP_WIDTH = 78  # click wraps help at min(COLUMNS, 80) - 2


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "recctl")
def test_help_keeps_config_sections_and_wraps_paragraphs_evenly(
    cli: CliRunner, path: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    r = cli(*path, "--help")
    assert r.code == 0 and r.stderr == ""
    command = _command(path)
    # every "[section]" of the help texts (the command's and its options') is printed as written
    sources = [getattr(command, "help", None) or ""]
    sources += [getattr(p, "help", None) or "" for p in getattr(command, "params", [])]
    for section in sorted({m for text in sources for m in re.findall(r"\[\[?[a-z_]+\]\]?", text)}):
        assert section in r.stdout, f"{section} missing from `recctl {' '.join(path)} --help`"
    assert "\\[" not in r.stdout  # no markup escapes left over
    # the description is reflowed: within a paragraph, no line could have taken the next line's first word
    # (a hard line break in a docstring leaves a short line, then a long one: "nothing on" / "ordinary ...")
    lines = r.stdout.splitlines()
    assert all(len(line) <= HELP_WIDTH for line in lines), r.stdout
    start = next(i for i, line in enumerate(lines) if line.startswith("Usage:")) + 1
    end = next((i for i, line in enumerate(lines) if line.endswith(":") and not line.startswith(" ")),
               len(lines))  # fmt: skip
    description = lines[start:end]
    for a, b in itertools.pairwise(description):
        if a.strip() and b.strip():
            assert len(a) + 1 + len(b.split()[0]) > HELP_WIDTH, f"ragged help line {a!r} before {b!r}"


def test_version(cli: CliRunner) -> None:
    r = cli("--version")
    assert r.code == 0 and r.stdout.startswith("recctl ")


def test_usage_errors_exit_2(cli: CliRunner) -> None:
    assert cli("ingest").code == 2
    assert cli("--no-such-option").code == 2
    assert cli("no-such-command").code == 2


def test_json_is_exactly_one_document_and_errors_go_to_stderr(cli: CliRunner, wh: Path) -> None:
    r = cli("--json", "--warehouse", wh, "ingest", "events", BAD / "wrong_types.csv")
    assert r.code == 0
    json.loads(r.stdout)  # one document, nothing else
    assert r.stdout.count("\n") == 1
    r = cli("--json", "--warehouse", wh, "ingest", "events", BAD / "missing_column.csv")
    assert r.code == 65
    json.loads(r.stdout)
    assert "recctl: error:" in r.stderr and "recctl: error:" not in r.stdout


def test_quiet_runs_print_their_data_and_nothing_else_on_success(cli: CliRunner, wh: Path) -> None:
    r = cli("--quiet", "--warehouse", wh, "ingest", "events", BAD / "dup_within.csv")
    assert (r.code, r.stderr) == (0, "")
    header, row = r.stdout.splitlines()  # the data (TSV), no decoration
    assert header.startswith("path\tstatus\trows_read\trows_loaded\trows_rejected\trows_duplicate")
    assert row.split("\t")[:6] == [str(BAD / "dup_within.csv"), "loaded", "4", "2", "0", "2"]


def test_traceback_only_with_verbose(cli: CliRunner, wh: Path) -> None:
    r = cli("--warehouse", wh, "status")
    assert r.code == 2 and "no warehouse at" in r.stderr and "Traceback" not in r.stderr
    r = cli("-v", "--warehouse", wh, "status")
    assert r.code == 2 and "Traceback" in r.stderr


def test_init_scaffolds_and_keeps_existing_files(cli: CliRunner, tmp_path: Path) -> None:
    r = cli("--json", "init", tmp_path / "shop")
    assert r.code == 0
    cfg = tmp_path / "shop" / "configs" / "recctl.toml"
    assert cfg.read_text() == (ROOT / "configs" / "recctl.toml").read_text()
    assert (tmp_path / "shop" / "configs" / "mappings" / "sample-shop-events.toml").exists()
    segments = (tmp_path / "shop" / "configs" / "segments.toml").read_text()
    assert segments == (ROOT / "configs" / "segments.toml").read_text()
    assert query(tmp_path / "shop" / "recctl.duckdb", "SELECT max(version) FROM schema_version") == [
        (LATEST,)
    ]
    cfg.write_text("seed = 3\n")
    r = cli("--json", "init", tmp_path / "shop")
    assert str(cfg) in r.json["kept"] and cfg.read_text() == "seed = 3\n"


def test_status_reports_counts(cli: CliRunner, wh: Path) -> None:
    cli("--warehouse", wh, "ingest", "events", BAD / "wrong_types.csv", BAD / "dup_within.csv")
    r = cli("--json", "--warehouse", wh, "status")
    assert r.code == 0
    s = r.json
    assert s["events"]["rows"] == 4 and s["events"]["by_type"] == {"view": 2, "purchase": 1, "search": 1}
    assert s["ingest"]["rejects"] == {"events": 7}
    assert s["ingest"]["files"]["ok"]["files"] == 2
    assert s["writer"] is None


def test_demo_runs_on_the_sample_shop_and_reruns_as_noop(cli: CliRunner, tmp_path: Path) -> None:
    r = cli("--json", "demo", "--quick", "--data", ROOT / "sample_data", "--workdir", tmp_path / "demo")
    assert r.code == 0, r.stderr
    # the quick tour: four generators, the ranker over them, the baselines
    assert set(r.json["evaluation"]["models"]) == {"ranked", "trending", "next-item", "itemknn", "buy-again",
                                                    "popular", "popular-recent", "random", "personal-top"}  # fmt: skip
    loaded = {f["target"]: f["rows_loaded"] for rep in r.json["ingest"] for f in rep["files"]}
    assert loaded["items"] == 1530 and loaded["events"] > 100_000  # 1500 fashion items + 30 care items
    # it ends with lists and their reasons for a new visitor, a loyal buyer and a product
    ex = r.json["examples"]
    assert ex["new_visitor"]["state"] == "new" and ex["loyal_buyer"]["state"] == "buyer"
    assert (
        ex["loyal_buyer"]["user_id"]
        in json.loads((ROOT / "sample_data" / "ground_truth.json").read_text())["brand_loyal"]
    )
    assert all(
        len(ex[k]["items"]) == 5 and all(i["reason"] for i in ex[k]["items"]) for k in ex if k != "buy_again"
    )
    # and the buy-again list of a planted consumable buyer who is due: their habit item first, with its cycle
    habits = json.loads((ROOT / "sample_data" / "ground_truth.json").read_text())["consumable_habits"]
    again = ex["buy_again"]
    habit = habits[again["user_id"]]
    assert again["list"] == "buy-again" and habit["due_at_end"]
    assert again["items"][0]["item_id"] in [habit["item_id"], *habit["also_item_ids"]]
    every = re.match(r"you buy this about every (\d+) days; last bought", again["items"][0]["reason"])
    assert every is not None and abs(int(every.group(1)) - habit["every_days"]) <= 1, again["items"][0]
    assert r.json["online_store"]["users"] == 2000 and set(r.json["segments"]["segments"]) == {
        "premium-enthusiasts", "budget-kids"}  # fmt: skip
    r = cli("--json", "demo", "--quick", "--data", ROOT / "sample_data", "--workdir", tmp_path / "demo")
    assert {f["status"] for rep in r.json["ingest"] for f in rep["files"]} == {"unchanged"}


def test_demo_without_sample_data_exits_66(cli: CliRunner, tmp_path: Path) -> None:
    r = cli("demo", "--data", tmp_path / "none", "--workdir", tmp_path / "demo")
    assert r.code == 66 and "recctl sample" in r.stderr
