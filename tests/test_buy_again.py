"""Buy it again: `recommend --user U --list buy-again` and the cycle reasons, over the sample shop's planted
consumable habits (ground_truth.json ``consumable_habits``)."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, CliRunner

TRUTH = json.loads((ROOT / "sample_data" / "ground_truth.json").read_text())
HABITS: dict[str, dict[str, Any]] = TRUTH["consumable_habits"]
EVERY = re.compile(r"^you buy this about every (\d+) days; last bought (?:today|yesterday|(\d+) days ago)$")


@pytest.fixture
def demo(quick_demo: Path) -> Path:
    """The session's quick demo (tests/conftest.py)."""
    return quick_demo


def _args(demo: Path, config: str = "fashion.toml") -> list[str | Path]:
    return ["--config", demo / "configs" / config, "--warehouse", demo / "recctl.duckdb"]


def _due_users() -> list[str]:
    return sorted(u for u, h in HABITS.items() if h["due_at_end"])


def test_buy_again_finds_the_planted_habit_with_its_cycle(
    cli: CliRunner, demo: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(demo)
    users = _due_users()[:12]
    assert users, "the sample shop plants due consumable habits"
    found = 0
    for user in users:
        r = cli(
            "--json",
            *_args(demo),
            "recommend",
            "--user",
            user,
            "--list",
            "buy-again",
            "--k",
            "3",
            "--explain",
        )
        assert r.code == 0, r.stderr
        doc = r.json
        assert doc["list"] == "buy-again" and doc["source"] == "live"
        habit = HABITS[user]
        items = doc["items"]
        assert items, user
        # the fashion config lets only the care range back: every listed item is a consumable re-buy
        assert all(any(x.startswith("repurchase: ") for x in it["rules"]) for it in items)
        top = items[0]
        if top["item_id"] in [habit["item_id"], *habit["also_item_ids"]]:
            found += 1
            m = EVERY.match(top["reason"])
            assert m is not None, top["reason"]
            assert abs(int(m.group(1)) - habit["every_days"]) <= 2, (top["reason"], habit)
    assert found >= 0.8 * len(users), (found, len(users))


def test_rules_decide_what_may_come_back(cli: CliRunner, demo: Path, monkeypatch: Any) -> None:
    """Default rules (everything bought excluded): an empty list; grocery rules: every bought item."""
    monkeypatch.chdir(demo)
    user = _due_users()[0]
    r = cli("--json", *_args(demo, "recctl.toml"), "recommend", "--user", user, "--list", "buy-again")
    assert r.code == 0 and r.json["items"] == [], r.stderr
    fashion = cli(
        "--json", *_args(demo), "recommend", "--user", user, "--list", "buy-again", "--k", "50"
    ).json
    grocery = cli("--json", *_args(demo, "grocery.toml"), "recommend", "--user", user, "--list", "buy-again",
                  "--k", "50").json  # fmt: skip
    assert len(grocery["items"]) > len(fashion["items"]) > 0
    scores = [it["score"] for it in grocery["items"]]
    assert scores == sorted(scores, reverse=True)


def test_list_options_are_checked(cli: CliRunner, demo: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(demo)
    r = cli(*_args(demo), "recommend", "--item", "p0001", "--list", "buy-again")
    assert r.code == 2 and "--list goes with --user" in r.stderr
    r = cli(*_args(demo), "recommend", "--user", "u00001", "--list", "again")
    assert r.code == 2 and "unknown list 'again'" in r.stderr


def test_bought_items_in_the_main_list_are_explained_by_their_cycle(demo: Path, monkeypatch: Any) -> None:
    """With repurchase allowed (grocery rules) a due consumable comes back in the main list with its cycle."""
    from recctl.config import load_config
    from recctl.serving.service import recommend_user
    from recctl.warehouse import open_reader

    monkeypatch.chdir(demo)
    cfg = load_config(demo / "configs" / "grocery.toml",
                      overrides={"warehouse": {"path": str(demo / "recctl.duckdb")}, "runs_dir": str(demo / "runs")})  # fmt: skip
    end = datetime.fromisoformat(TRUTH["meta"]["end"].replace("Z", "")) - timedelta(seconds=1)
    with open_reader(cfg) as wh:
        docs = [recommend_user(wh, cfg, u, k=20, live=True, now=end) for u in _due_users()[:10]]
    mixed = [(d["user_id"], it) for d in docs for it in d["items"] if EVERY.match(it["reason"])]
    assert mixed, "no due item came back in a main list"
    assert any(it["item_id"] == HABITS[u]["item_id"] for u, it in mixed)


def test_a_run_without_a_buy_again_model_says_so(cli: CliRunner, demo: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "plain.toml"
    # a copy of the warehouse: a train promotes into its online store (the shared demo's must stay fresh)
    shutil.copy(demo / "recctl.duckdb", tmp_path / "recctl.duckdb")
    cfg.write_text(
        f'runs_dir = "{tmp_path / "runs"}"\n[warehouse]\npath = "{tmp_path / "recctl.duckdb"}"\n'
        '[[candidates]]\nname = "trending"\nkind = "popular"\n[ranker]\nenabled = false\n'
    )
    assert cli("--quiet", "--config", cfg, "train").code == 0
    r = cli("--config", cfg, "recommend", "--user", _due_users()[0], "--list", "buy-again")
    assert r.code != 0 and "no buy-again model" in r.stderr and "Traceback" not in r.stderr
