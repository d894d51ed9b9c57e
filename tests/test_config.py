"""Typed config: defaults, TOML, RECCTL_* overrides, unknown keys named, the shipped file in sync."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from recctl.config import RecctlConfig, load_config, parse_duration
from recctl.errors import ConfigError
from tests.conftest import ROOT, CliRunner


def test_defaults_without_a_file() -> None:
    cfg = load_config(environ={})
    assert cfg == RecctlConfig()
    assert cfg.warehouse.path == Path("recctl.duckdb") and cfg.seed == 42


def test_shipped_config_states_the_defaults() -> None:
    """configs/recctl.toml is the commented reference: every value it sets is the built-in default."""
    assert load_config(ROOT / "configs" / "recctl.toml", environ={}) == RecctlConfig()


def test_file_then_env_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('seed = 1\n[ingest]\nfuture_tolerance = "2h"\nextra_event_types = ["wishlist"]\n')
    env = {
        "RECCTL_SEED": "7",
        "RECCTL_WAREHOUSE": "/data/shop.duckdb",
        "RECCTL_INGEST__EXTRA_EVENT_TYPES": '["wishlist", "share"]',
        "HOME": "/root",
    }
    cfg = load_config(f, environ=env, overrides={"warehouse": {"lock_wait": 5}})
    assert cfg.seed == 7
    assert cfg.warehouse.path == Path("/data/shop.duckdb") and cfg.warehouse.lock_wait == 5.0
    assert cfg.ingest.future_tolerance == "2h"
    assert cfg.ingest.extra_event_types == ["wishlist", "share"]


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[ingest]\nfuture_tolerence = '1d'\n", {}, "unknown key 'ingest.future_tolerence'"),
        ("", {"RECCTL_INGEST__BOGUS": "1"}, "unknown key 'ingest.bogus'"),
        ("seed = 'many'\n", {}, "'seed'"),
        ("[ingest]\nfuture_tolerance = 'soon'\n", {}, "not a duration"),
        ("[ingest]\nextra_event_types = ['Bad Name']\n", {}, "lower_snake_case"),
        ("seed = \n", {}, "cannot parse"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(f, environ=env)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    assert parse_duration("4w") == timedelta(days=28)
    with pytest.raises(ValueError):
        parse_duration("3 days")


def test_status_config_prints_the_resolved_config(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECCTL_INGEST__FUTURE_TOLERANCE", "3h")
    r = cli("--json", "--warehouse", tmp_path / "w.duckdb", "status", "--config")
    assert r.code == 0
    assert r.json["ingest"]["future_tolerance"] == "3h"
    assert r.json["warehouse"]["path"] == str(tmp_path / "w.duckdb")


def test_bad_config_exits_2(cli: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[warehouse]\npath = 'x.duckdb'\ncolour = 'blue'\n")
    r = cli("--config", f, "status")
    assert r.code == 2 and "unknown key 'warehouse.colour'" in r.stderr
