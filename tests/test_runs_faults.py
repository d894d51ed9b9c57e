"""Run folders under faults: damaged or foreign files in a run, pickles, serving during a real `train`,
staging folders of killed and interrupted trains (issue 13, points 4, 6 and 7).

Every test works on a copy of the session's quick demo (tests/conftest.py ``quick_demo``): its promoted
run (the ranker over trending, next-item, itemknn and buy-again), its warehouse with a fresh online store.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from recctl import runs
from recctl.errors import NotTrainedError
from tests.conftest import AS_FROM_A_TERMINAL, CliRunner, messages, query

ENV = {k: v for k, v in os.environ.items() if not k.startswith("RECCTL_")}
OTHER_RUN = "20200101-000000000-0000"  # a second, healthy run beside the promoted one


def project_copy(demo: Path, dest: Path) -> Path:
    """A copy of the quick demo at ``dest`` with ``project.toml`` (the demo's configuration: fashion.toml
    plus its quick generators) and a second run ``OTHER_RUN`` (a copy of the promoted one)."""
    shutil.copytree(demo, dest, ignore=shutil.ignore_patterns("*.lock", "report.html"))
    run = dest / "runs" / runs.promoted(dest / "runs")  # type: ignore[operator]
    conf = json.loads((run / "config.json").read_text())
    lines = [f'runs_dir = "{dest / "runs"}"', (dest / "configs" / "fashion.toml").read_text(),
             f'[warehouse]\npath = "{dest / "recctl.duckdb"}"',
             f'[ingest]\nmappings_dir = "{dest / "configs" / "mappings"}"',
             f'[serving]\nsegments_file = "{dest / "configs" / "segments.toml"}"', "[ranker]\ngenerators = []"]  # fmt: skip
    for s in conf["candidates"]:
        params = ", ".join(f"{k} = {json.dumps(v)}" for k, v in (s.get("params") or {}).items())
        lines.append(f'[[candidates]]\nname = "{s["name"]}"\nkind = "{s["kind"]}"\nparams = {{ {params} }}')
    (dest / "project.toml").write_text("\n".join(lines) + "\n")
    other = dest / "runs" / OTHER_RUN
    shutil.copytree(run, other)
    meta = json.loads((other / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "run_id": OTHER_RUN}))
    return dest


@pytest.fixture(scope="module")
def base(quick_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return project_copy(quick_demo, tmp_path_factory.mktemp("runs-faults") / "project")


@pytest.fixture
def project(base: Path, tmp_path: Path) -> Path:
    """A fresh copy for one test to damage."""
    dest = tmp_path / "p"
    shutil.copytree(base, dest)
    conf = (base / "project.toml").read_text().replace(str(base), str(dest))
    (dest / "project.toml").write_text(conf)
    return dest


def promoted_run(project: Path) -> Path:
    return project / "runs" / (project / "runs" / "PROMOTED").read_text().strip()


def a_buyer(project: Path) -> str:
    rows = query(project / "recctl.duckdb", "SELECT user_id FROM events WHERE event_type = 'purchase' "
                 "AND user_id IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")  # fmt: skip
    return str(rows[0][0])


def a_product(project: Path) -> str:
    rows = query(project / "recctl.duckdb", "SELECT item_id FROM events WHERE event_type = 'purchase' "
                 "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")  # fmt: skip
    return str(rows[0][0])


def surfaces(cli: CliRunner, project: Path) -> dict[str, Any]:
    """Each surface's result: the online store (--user), live ranking (--user --live), a new visitor,
    --item, runs list, runs show of the promoted run."""
    conf = project / "project.toml"
    user, item, run_id = a_buyer(project), a_product(project), promoted_run(project).name
    return {
        "store": cli("--json", "--config", conf, "recommend", "--user", user, "--k", "5"),
        "live": cli("--json", "--config", conf, "recommend", "--user", user, "--k", "5", "--live"),
        "new": cli("--json", "--config", conf, "recommend", "--user", "never-seen-visitor", "--k", "5"),
        "item": cli("--json", "--config", conf, "recommend", "--item", item, "--k", "5"),
        "list": cli("--json", "--config", conf, "runs", "list"),
        "show": cli("--json", "--config", conf, "runs", "show", run_id),
    }


def garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 8)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def one_clear_line(r: Any, run_id: str, file: str) -> None:
    """Exit 2 with one ``recctl: error:`` line naming the run and the file (and a hint), no traceback."""
    assert r.code == 2, (r.code, r.stderr)
    lines = [ln for ln in messages(r.stderr) if ln.strip()]
    assert lines[0].startswith("recctl: error: ") and f"run {run_id}" in lines[0] and file in lines[0], lines
    assert len(lines) <= 2 and "internal error" not in r.stderr and "Traceback" not in r.stderr


# (file in the promoted run, how it is damaged, the surfaces that need it; the others must still serve)
CASES = [
    ("models/ranked/ranker.txt", garbage, {"live", "show"}),
    ("models/ranked/ranker.txt", truncate, {"live", "show"}),  # LightGBM segfaulted on it
    ("models/ranked/ranker.json", garbage, {"live", "show"}),
    ("models/ranked/features/user.parquet", truncate, {"live", "show"}),
    ("models/ranked/generators/trending/ranking.parquet", Path.unlink, {"live", "new", "show"}),
    ("models/ranked/generators/itemknn/similarity.npz", truncate, {"live", "item", "show"}),
    ("meta.json", garbage, {"store", "live", "new", "item", "show"}),
    ("config.json", garbage, {"store", "live", "new", "item", "show"}),
]


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "older-run"])
@pytest.mark.parametrize(("file", "damage", "needs"), CASES, ids=[f"{c[0].rsplit('/', 1)[-1]}-{c[1].__name__}" for c in CASES])  # fmt: skip
def test_a_damaged_file_in_a_run_is_one_clear_line(
    cli: CliRunner, project: Path, file: str, damage: Any, needs: set[str], manifest: bool
) -> None:
    """Each surface that needs the damaged file exits 2 naming the run and the file; the others serve;
    `runs list` lists the other run and marks this one broken. With the run's manifest the file is
    caught before any parser reads it (and `runs show` checks every file); without one (a run saved
    before it existed) it is found by parsing, and `runs show` reads only meta, config and ranker.json."""
    run = promoted_run(project)
    if not manifest:
        (run / "manifest.json").unlink()
    damage(run / file)
    fails = set(needs)
    if not manifest and file not in ("meta.json", "config.json", "models/ranked/ranker.json"):
        fails.discard("show")
    got = surfaces(cli, project)
    for name, r in got.items():
        if name in fails:
            one_clear_line(r, run.name, file)
        elif name != "list":
            assert r.code == 0, (name, r.stderr)
            assert r.json["items"] if name != "show" else r.json["run_id"] == run.name
    listed = got["list"]
    assert listed.code == 0, listed.stderr
    rows = {r["run_id"]: r for r in listed.json}
    assert set(rows) == {OTHER_RUN, run.name} and rows[OTHER_RUN]["status"] == "trained"
    if manifest or file in ("meta.json", "config.json"):
        assert rows[run.name]["status"] == "broken" and file in rows[run.name]["problem"]
        assert f"run {run.name} is broken" in listed.stderr and rows[run.name]["promoted"]


def test_a_file_altered_in_place_is_caught_by_the_manifest(cli: CliRunner, project: Path) -> None:
    """One digit of a leaf value changed (same size, still a valid model): only the checksum tells."""
    run = promoted_run(project)
    path = run / "models" / "ranked" / "ranker.txt"
    text = path.read_text()
    at = text.index("leaf_value=") + len("leaf_value=") + 3
    path.write_text(text[:at] + ("1" if text[at] != "1" else "2") + text[at + 1 :])
    got = surfaces(cli, project)
    one_clear_line(got["live"], run.name, "models/ranked/ranker.txt")
    assert "SHA-256" in got["live"].stderr
    assert got["new"].code == 0 and got["item"].code == 0 and got["store"].code == 0
    one_clear_line(
        cli("--config", project / "project.toml", "runs", "promote", run.name), run.name, "ranker.txt"
    )


def test_a_run_without_meta_is_listed_broken_and_named(cli: CliRunner, project: Path) -> None:
    run = promoted_run(project)
    (run / "meta.json").unlink()
    conf = project / "project.toml"
    r = cli("--config", conf, "recommend", "--user", "never-seen-visitor")
    one_clear_line(r, run.name, "meta.json")
    listed = cli("--json", "--config", conf, "runs", "list").json
    assert {x["run_id"]: x["status"] for x in listed} == {OTHER_RUN: "trained", run.name: "broken"}


def test_a_damaged_run_is_not_promoted(cli: CliRunner, project: Path) -> None:
    conf = project / "project.toml"
    truncate(project / "runs" / OTHER_RUN / "models" / "ranked" / "ranker.txt")
    one_clear_line(cli("--config", conf, "runs", "promote", OTHER_RUN), OTHER_RUN, "ranker.txt")
    assert promoted_run(project).name != OTHER_RUN


# ---------------------------------------------------------------------------------------------- pickles


class Payload:
    """Unpickling it creates ``marker``: the proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_a_torch_file_holding_a_pickle_is_refused(tmp_path: Path) -> None:
    """SASRec's state dict is read with weights_only=True: a torch.save of any other object (here one
    whose unpickling would create a file) is refused with a clear message, and nothing runs."""
    import polars as pl
    import torch

    from recctl.candidates.base import build, load_generator

    users = [f"u{i % 12}" for i in range(96)]
    frame = pl.DataFrame({"user_id": users, "item_id": [f"i{(i * 7) % 9}" for i in range(96)]}).with_columns(
        ts=pl.datetime(2024, 1, 1) + pl.duration(minutes=pl.int_range(pl.len())), event_type=pl.lit("view"),
        session_id=pl.col("user_id"),
    )  # fmt: skip
    params = {
        "epochs": 1,
        "hidden": 8,
        "max_len": 4,
        "layers": 1,
        "batch_size": 8,
        "patience": 1,
        "threads": 1,
    }
    gen = build("sasrec", "seq", params)
    gen.fit(frame.sort("user_id", "ts"), seed=0)
    folder = tmp_path / "runs" / "r1" / "models" / "seq"
    gen.save(folder)
    (tmp_path / "runs" / "r1" / "meta.json").write_text("{}")
    assert load_generator("sasrec", folder, "seq", params).kind == "sasrec"  # the real state dict loads
    marker = tmp_path / "pwned"
    torch.save(Payload(marker), folder / "model.pt")
    with pytest.raises(NotTrainedError) as err:
        load_generator("sasrec", folder, "seq", params)
    assert not marker.exists()
    assert "run r1" in err.value.message and "models/seq/model.pt" in err.value.message
    assert "refused" in err.value.message and "\n" not in err.value.message


def test_a_pickle_file_in_a_run_is_refused(cli: CliRunner, project: Path) -> None:
    """A .pkl dropped into a run: every command that reads the run refuses it by name; nothing is
    unpickled; `runs list` marks it broken."""
    run = promoted_run(project)
    marker = project / "pwned"
    (run / "models" / "ranked" / "generators" / "trending" / "extra.pkl").write_bytes(
        pickle.dumps(Payload(marker))
    )
    got = surfaces(cli, project)
    for name in ("store", "live", "new", "item", "show"):
        one_clear_line(got[name], run.name, "extra.pkl")
        assert "pickle" in got[name].stderr
    rows = {r["run_id"]: r for r in got["list"].json}
    assert rows[run.name]["status"] == "broken" and "extra.pkl" in rows[run.name]["problem"]
    assert rows[OTHER_RUN]["status"] == "trained"
    assert not marker.exists()


def test_train_gate_records_its_evaluation_at_the_end(cli: CliRunner, project: Path, tmp_path: Path) -> None:
    """train reads read-only: the --gate evaluation's eval_runs rows are written at the end (one short
    read-write transaction) and the run's meta names them."""
    conf = tmp_path / "gate.toml"
    conf.write_text(f'runs_dir = "{tmp_path / "runs"}"\n[warehouse]\npath = "{project / "recctl.duckdb"}"\n'
                    "[evaluate]\nn_boot = 50\nbaselines = []\n[[candidates]]\nname = \"recent\"\n"
                    'kind = "popular"\nparams = { window_days = 7.0 }\n')  # fmt: skip
    before = query(project / "recctl.duckdb", "SELECT count(*) FROM eval_runs")[0][0]
    r = cli("--json", "--config", conf, "train", "--gate", "--no-ranker")
    assert r.code == 0, r.stderr
    evaluation = r.json["evaluation"]
    assert evaluation["gate"]["passed"] and evaluation["model"] == "recent"
    rows = query(project / "recctl.duckdb", "SELECT DISTINCT eval_id, model FROM eval_runs WHERE eval_id = "
                 f"'{evaluation['eval_id']}'")  # fmt: skip
    assert rows == [(evaluation["eval_id"], "recent")]
    assert query(project / "recctl.duckdb", "SELECT count(*) FROM eval_runs")[0][0] > before


# ------------------------------------------------------------------------------------ staging folders


def staging(runs_dir: Path) -> list[Path]:
    return sorted(p for p in runs_dir.iterdir() if p.name.startswith(".tmp-"))


def test_only_the_staging_of_trains_no_longer_running_is_swept(tmp_path: Path) -> None:
    live = runs.staging_path(tmp_path, "live")  # this process: running

    def owned(name: str, **owner: Any) -> Path:
        path = tmp_path / f".tmp-{name}"
        path.mkdir()
        (path / "owner.json").write_text(json.dumps(owner))
        return path

    host = socket.gethostname()
    me = json.loads((live / "owner.json").read_text())
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True
    )
    gone = owned("gone", pid=int(dead.stdout), host=host)
    reused = owned("reused", pid=os.getpid(), host=host, proc_start="1")  # the pid now is another process
    elsewhere = owned("elsewhere", pid=1, host="another-host")  # cannot be checked: kept until stale
    abandoned = owned("abandoned", pid=1, host="another-host")
    os.utime(abandoned, (time.time() - 3 * 86400,) * 2)
    fresh = tmp_path / ".tmp-fresh"  # no owner file yet (a train between mkdir and its write)
    fresh.mkdir()
    old = tmp_path / ".tmp-old"
    old.mkdir()
    (old / "owner.json").write_text("garbage")
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    assert me["pid"] == os.getpid() and me["host"] == host
    removed = runs.sweep_staging(tmp_path)
    assert sorted(removed) == [".tmp-abandoned", ".tmp-gone", ".tmp-old", ".tmp-reused"]
    assert live.exists() and elsewhere.exists() and fresh.exists()
    assert not any(p.exists() for p in (gone, reused, old, abandoned))


def recctl(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *AS_FROM_A_TERMINAL, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip


def fitting(proc: subprocess.Popen[str], runs_dir: Path, timeout: float = 120) -> Path:
    """The staging folder of the train ``proc`` once it exists (the train is fitting), with its owner."""
    deadline = time.monotonic() + timeout
    while True:
        found = [p for p in staging(runs_dir) if (p / "owner.json").exists()]
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the train never started fitting"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def trainer(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project for the real-process trains, in order (each test leaves no train running)."""
    dest = tmp_path_factory.mktemp("trainer") / "p"
    shutil.copytree(base, dest)
    (dest / "project.toml").write_text((base / "project.toml").read_text().replace(str(base), str(dest)))
    return dest


def test_serving_stays_up_during_a_real_train(trainer: Path) -> None:
    """10 `recommend --user` processes (no --wait) while a `recctl train` process fits: all answer; a
    concurrent `runs list` and a second train (exit 75: the writer lock) leave the live train's
    staging folder alone; the train promotes its run as before."""
    conf, runs_dir = trainer / "project.toml", trainer / "runs"
    before = promoted_run(trainer).name
    user = a_buyer(trainer)
    train = recctl("--json", "--config", conf, "train")
    folder = fitting(train, runs_dir)
    calls = [recctl("--json", "--config", conf, "recommend", "--user", user, "--k", "5") for _ in range(10)]
    listing = recctl("--json", "--config", conf, "runs", "list")
    second = recctl("--config", conf, "train")
    answers = [(*c.communicate(timeout=120), c.returncode) for c in calls]
    assert second.wait(timeout=120) == 75, second.communicate()
    assert listing.wait(timeout=120) == 0
    assert folder.exists() or train.poll() is not None  # only the train itself removes it
    out, err = train.communicate(timeout=300)
    assert train.returncode == 0, err
    assert [code for _, _, code in answers] == [0] * 10, [e for _, e, _ in answers]
    assert all(json.loads(o)["items"] for o, _, _ in answers)
    run_id = json.loads(out)["run_id"]
    assert run_id != before and promoted_run(trainer).name == run_id
    assert (runs_dir / run_id / "manifest.json").exists() and not staging(runs_dir)


def test_sigint_during_the_fit_removes_the_staging_folder(trainer: Path) -> None:
    conf, runs_dir = trainer / "project.toml", trainer / "runs"
    before = promoted_run(trainer).name
    train = recctl("--config", conf, "train")
    fitting(train, runs_dir)
    time.sleep(0.5)
    train.send_signal(signal.SIGINT)
    _, err = train.communicate(timeout=60)
    assert train.returncode == 130, err
    assert "interrupted by SIGINT" in err and "Traceback" not in err
    assert "Traceback" not in err and not staging(runs_dir)
    assert promoted_run(trainer).name == before


def test_the_next_train_removes_a_killed_trains_staging_folder(cli: CliRunner, trainer: Path) -> None:
    conf, runs_dir = trainer / "project.toml", trainer / "runs"
    before = promoted_run(trainer).name
    train = recctl("--config", conf, "train")
    left = fitting(train, runs_dir)
    os.kill(train.pid, signal.SIGKILL)
    train.wait(timeout=30)
    assert left.exists() and promoted_run(trainer).name == before  # kill -9: nothing can clean up
    r = cli("--json", "--config", conf, "train", "--no-ranker", "--candidates", "trending", "--promote")
    assert r.code == 0, r.stderr
    assert not left.exists() and not staging(runs_dir)
    assert promoted_run(trainer).name == r.json["run_id"]
