"""Progress on long steps (issue 14, point 4): stage logs off a terminal, bars on one, nothing with --quiet.

The end-to-end tests run ``python -m recctl`` as real processes with stderr a pipe (as cron runs it) on a
tiny synthetic shop (120 customers, 80 products, 90 days) trained with three generators and the ranker.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from recctl import progress
from recctl.console import Output
from tests.conftest import ROOT, STAGE_LOG, messages

ENV = {k: v for k, v in os.environ.items() if not k.startswith("RECCTL_") and k != "TTY_COMPATIBLE"}
ENV["PYTHONPATH"] = str(ROOT)
#: one stage log line: the time (UTC), the command, the stage path, then what happened
LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) recctl (.+?): (.+?) …(.*)$")

SMALL = """
[[candidates]]
name = "trending"
kind = "popular"
params = { half_life_days = 7.0 }
[[candidates]]
name = "next-item"
kind = "cooccur"
[[candidates]]
name = "itemknn"
kind = "itemknn"
[evaluate]
n_boot = 50
"""


def recctl(cwd: Path, *args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recctl", *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def stages(stderr: str, command: str) -> dict[str, list[str]]:
    """Each stage path of ``command`` with what its lines said after the '…' (start line first)."""
    out: dict[str, list[str]] = {}
    for ln in stderr.splitlines():
        m = LINE.match(ln)
        if m and m[2] == command:
            datetime.strptime(m[1], "%Y-%m-%dT%H:%M:%SZ")  # a real timestamp
            out.setdefault(m[3], []).append(m[4].strip())
    return out


def started_and_done(found: dict[str, list[str]], stage: str) -> str:
    """The stage logged a start line and a 'done in N s' end line; returns the end line's tail."""
    assert stage in found, f"no stage {stage!r} in {list(found)}"
    lines = found[stage]
    assert len(lines) >= 2 and re.match(r"done in \d+\.\d s", lines[-1]), lines
    return lines[-1]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A project (recctl init) with a tiny sample shop ingested and configs/small.toml; and the stderr of
    the events ingest."""
    work = tmp_path_factory.mktemp("progress")
    r = recctl(work, "-q", "sample", "shop", "--users", "120", "--items", "80", "--days", "90")
    assert r.returncode == 0, r.stderr
    r = recctl(work, "-q", "init", "proj")
    assert r.returncode == 0, r.stderr
    proj = work / "proj"
    (proj / "configs" / "small.toml").write_text(SMALL)
    ingested = recctl(
        proj, "ingest", "events", work / "shop" / "events.csv.gz", "--mapping", "sample-shop-events"
    )
    assert ingested.returncode == 0, ingested.stderr
    for table, name in (("items", "items.ndjson"), ("users", "users.csv")):
        r = recctl(proj, "-q", "ingest", table, work / "shop" / name, "--mapping", f"sample-shop-{table}")
        assert r.returncode == 0, r.stderr
    yield proj, ingested.stderr


@pytest.fixture(scope="module")
def trained(shop: tuple[Path, str]) -> tuple[Path, subprocess.CompletedProcess[str]]:
    proj, _ = shop
    r = recctl(proj, "--config", "configs/small.toml", "--json", "train")
    assert r.returncode == 0, r.stderr
    return proj, r


# ------------------------------------------------------------------------------------ end to end


def test_train_logs_each_stage_with_a_timestamp(
    trained: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    _, r = trained
    json.loads(r.stdout)  # stdout still carries exactly the --json document
    found = stages(r.stderr, "train")
    for stage in ("load events and items", "prepare", "fit generator trending (1/3)",
                  "fit generator next-item (2/3)", "fit generator itemknn (3/3)", "ranker", "ranker / label split",
                  "ranker / fit generator itemknn on the label history (3/3)", "ranker / features",
                  "ranker / LightGBM fit", "ranker / features as of the end of training", "save run",
                  "finish run"):  # fmt: skip
        started_and_done(found, stage)
    assert any(s.startswith("ranker / candidates of ") for s in found)
    # start before end, in order: the ranker's stages are inside its own lines
    order = [LINE.match(ln)[3] for ln in r.stderr.splitlines() if LINE.match(ln)]  # type: ignore[index]
    first, last = order.index("ranker"), len(order) - 1 - order[::-1].index("ranker")
    assert first < order.index("ranker / LightGBM fit") < last
    # the ranker (its history generators freed) comes before the final generators: never both in memory
    assert last < order.index("fit generator trending (1/3)")
    # every stderr line is a stage log or a message a person reads
    assert all(STAGE_LOG.match(ln) for ln in r.stderr.splitlines() if ln.startswith("20"))


def test_quiet_gives_no_stage_lines(trained: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    proj, _ = trained
    for args in (("train", "--no-ranker"), ("recommend", "--all")):
        r = recctl(proj, "--config", "configs/small.toml", "--quiet", *args)
        assert r.returncode == 0, r.stderr
        assert not [ln for ln in r.stderr.splitlines() if STAGE_LOG.match(ln)], r.stderr


def test_recommend_all_counts_users_out_of_a_known_total(
    trained: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    proj, _ = trained
    r = recctl(proj, "--config", "configs/small.toml", "--json", "recommend", "--all")
    assert r.returncode == 0, r.stderr
    users = json.loads(r.stdout)["users"]
    found = stages(r.stderr, "recommend --all")
    assert found["rank users"][0] == f"0/{users} users"  # the total is known when ranking starts
    assert started_and_done(found, "rank users").endswith(f", {users}/{users} users")
    assert "?" not in r.stderr
    for stage in ("load users, events and the run", "write the online store"):
        started_and_done(found, stage)


def test_evaluate_logs_the_split_each_model_and_the_report(
    trained: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    proj, _ = trained
    r = recctl(proj, "--config", "configs/small.toml", "evaluate", "--report", "report.html")
    assert r.returncode == 0, r.stderr
    found = stages(r.stderr, "evaluate")
    for stage in ("load events", "temporal split", "prepare the training view", "paired lift intervals of ranked",
                  "HTML report"):  # fmt: skip
        started_and_done(found, stage)
    models = [s for s in found if re.fullmatch(r"model \S+ \(\d+/\d+\)", s)]
    n = len(models)
    assert n == 8 and all(s.endswith(f"/{n})") for s in models), models  # 3 generators, 4 baselines, ranked
    for s in models:  # where each model's time went: fit, ranking the test users, metrics and bootstrap
        tail = started_and_done(found, s)
        assert re.search(
            r": fit \d+\.\d s, \d+ test users ranked in \d+\.\d s, metrics \d+\.\d s \(50 bootstrap", tail
        )
    assert found[f"model ranked ({n}/{n})"]  # the pipeline comes last, its stages inside
    started_and_done(found, f"model ranked ({n}/{n}) / LightGBM fit")


def test_gate_evaluation_is_a_stage_of_train(trained: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    proj, _ = trained
    r = recctl(proj, "--config", "configs/small.toml", "train", "--gate")
    assert r.returncode in (0, 3), r.stderr  # passed or failed, the time it took is in the log
    found = stages(r.stderr, "train")
    started_and_done(found, "gate evaluation")
    # the live run has the same settings: its value is the candidate's, nothing is fitted again
    assert not any(s.startswith("gate evaluation / reference") for s in found), list(found)
    # other settings: the live run's own are fitted again, a stage of its own
    other = proj / "configs" / "other.toml"
    other.write_text((proj / "configs" / "small.toml").read_text() + "[ranker]\nmin_positives = 19\n")
    r = recctl(proj, "--config", other, "train", "--gate")
    assert r.returncode in (0, 3), r.stderr
    found = stages(r.stderr, "train")
    assert any(s.startswith("gate evaluation / reference: promoted run ") for s in found), list(found)


def test_ingest_logs_each_file_with_its_counts(shop: tuple[Path, str]) -> None:
    _, stderr = shop
    tail = started_and_done(stages(stderr, "ingest events"), "events.csv.gz (1/1)")
    assert re.fullmatch(r"done in \d+\.\d s: (\d+) of \1 rows loaded", tail), tail


@pytest.mark.parametrize(
    ("args", "command", "stage"),
    [
        (("features",), "features", "user features"),
        (("prepare", "--dry-run"), "prepare", "filters"),
        (("segments", "apply"), "segments apply", "load events, items and users"),
    ],
)
def test_other_long_commands_log_their_stages(
    shop: tuple[Path, str], args: tuple[str, ...], command: str, stage: str
) -> None:
    proj, _ = shop
    r = recctl(proj, *args)
    assert r.returncode == 0, r.stderr
    started_and_done(stages(r.stderr, command), stage)
    assert not [ln for ln in recctl(proj, "-q", *args).stderr.splitlines() if STAGE_LOG.match(ln)]


# --------------------------------------------------------------------------------------- the unit


def _clock() -> datetime:
    return datetime(2026, 12, 3, 6, 40, 12, tzinfo=UTC)


def test_log_reporter_format() -> None:
    buf = io.StringIO()
    with progress.use(progress.LogReporter("train", buf, clock=_clock)):
        with progress.stage("fit generator ials"):
            pass
        with progress.stage("ranker"), progress.stage("LightGBM fit"):
            progress.note("best iteration 12\nof 100")
        with progress.stage("rank users", total=120, unit="users"):
            progress.advance(100)
            progress.advance(20)
        with pytest.raises(ValueError), progress.stage("save run"):
            raise ValueError("disk full")
    lines = [re.sub(r"\d+\.\d s", "X s", ln) for ln in buf.getvalue().splitlines()]
    at = "2026-12-03T06:40:12Z recctl train: "
    assert lines == [
        at + "fit generator ials …",
        at + "fit generator ials … done in X s",
        at + "ranker …",
        at + "ranker / LightGBM fit …",
        at + "ranker / LightGBM fit … done in X s: best iteration 12 of 100",
        at + "ranker … done in X s",
        at + "rank users … 0/120 users",
        at + "rank users … done in X s, 120/120 users",
        at + "save run …",
        at + "save run … failed after X s (ValueError)",
    ]
    assert all(STAGE_LOG.match(ln) for ln in lines)


def test_log_reporter_reports_a_long_stage_in_between() -> None:
    buf = io.StringIO()
    with (
        progress.use(progress.LogReporter("recommend --all", buf, clock=_clock, every_s=0.0)),
        progress.stage("rank users", total=4, unit="users"),
    ):
        progress.advance(1)
    middle = buf.getvalue().splitlines()[1]
    assert re.fullmatch(r".* rank users … 1/4 users \(25%\) after \d+\.\d s", middle), middle


def test_without_a_reporter_library_code_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    assert progress.current() is None
    with progress.stage("fit generator ials", total=3) as st:
        progress.advance(1)
        progress.note("nothing")
    assert st is None
    assert capsys.readouterr() == ("", "")


def test_the_reporter_follows_the_output_mode() -> None:
    assert progress.for_output(Output(quiet=True), "train") is None
    assert isinstance(progress.for_output(Output(json_mode=True), "train"), progress.LogReporter)
    assert isinstance(progress.for_output(Output(), "train"), progress.LogReporter)  # stderr is captured here


def test_rich_reporter_on_a_terminal() -> None:
    from rich.console import Console

    buf = io.StringIO()
    out = Output()
    out._err = Console(file=buf, force_terminal=True, width=100)
    rep = progress.for_output(out, "train")
    assert isinstance(rep, progress.RichReporter)
    with progress.use(rep):
        with progress.stage("fit generator ials"), progress.stage("inner"):
            pass
        with progress.stage("rank users", total=10, unit="users"):
            progress.advance(10)
    text = buf.getvalue()
    assert "fit generator ials" in text and "done in" in text and "10/10 users" in text
    assert "recctl train:" not in text  # bars and finished lines, not the log format
    assert messages("x\n" + "2026-12-03T06:40:12Z recctl train: a … done in 1.0 s") == ["x"]
