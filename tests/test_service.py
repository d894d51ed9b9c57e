"""`recctl serve` end to end: a real server process over a copy of the quick demo project, asked over
loopback HTTP; the CLI's JSON documents are the reference (one contract for both)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import query

KEY = "test-key-123"


@dataclass
class Server:
    url: str
    project: Path
    proc: subprocess.Popen[bytes]

    def get(self, path: str, **headers: str) -> tuple[int, Any]:
        return self.call("GET", path, None, headers)

    def post(self, path: str, body: Any, **headers: str) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.call("POST", path, data, {"content-type": "application/json", **headers})

    def call(self, method: str, path: str, data: bytes | None, headers: dict[str, str]) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, raw, kind = r.status, r.read(), r.headers.get("content-type", "")
        except urllib.error.HTTPError as e:
            status, raw, kind = e.code, e.read(), e.headers.get("content-type", "")
        return status, json.loads(raw) if "json" in kind else raw.decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECCTL_")}
    return {**env, "RECCTL_API_KEY": KEY, "RECCTL_SERVICE__RELOAD_INTERVAL": "0.5",
            "RECCTL_SERVICE__MAX_BODY_BYTES": "20000", "RECCTL_SERVICE__INBOX_ROTATE": "0.5"}  # fmt: skip


def recctl(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "recctl", *args], cwd=project, env=_env(), check=False,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _wait_ready(server: Server, timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"the server exited {server.proc.returncode}")
        try:
            status, doc = server.get("/readyz")
            if status == 200:
                return dict(doc)
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not become ready")


def _start(project: Path) -> Server:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "recctl", "serve", "--port", str(port)], cwd=project,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    srv = Server(f"http://127.0.0.1:{port}", project, proc)
    _wait_ready(srv)
    return srv


def _stop(srv: Server) -> None:
    srv.proc.terminate()
    try:
        srv.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        srv.proc.kill()


@pytest.fixture(scope="module")
def server(quick_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    project = tmp_path_factory.mktemp("serve") / "shop"
    shutil.copytree(quick_demo, project, ignore=shutil.ignore_patterns("*.lock", "*.serve", "*.inbox"))
    srv = _start(project)
    try:
        yield srv
    finally:
        _stop(srv)


def _promoted(project: Path) -> str:
    return (project / "runs" / "PROMOTED").read_text().strip()


def _users(project: Path, n: int) -> list[str]:
    rows = query(project / "recctl.duckdb", f"SELECT DISTINCT user_id FROM recs ORDER BY 1 LIMIT {n}")
    return [r[0] for r in rows]


def test_health_ready_and_openapi(server: Server) -> None:
    assert server.get("/healthz") == (200, {"status": "ok"})
    status, ready = server.get("/readyz")
    assert status == 200 and ready["ready"] and ready["run_id"] == _promoted(server.project)
    assert (
        ready["tables"]["events"]
        == query(server.project / "recctl.duckdb", "SELECT count(*) FROM events")[0][0]
    )
    status, spec = server.get("/openapi.json")
    assert status == 200
    for route in ("/v1/recommend/user/{user_id}", "/v1/recommend/item/{item_id}", "/v1/recommend/session",
                  "/v1/rerank", "/v1/segments/{user_id}", "/healthz", "/readyz", "/metrics"):  # fmt: skip
        assert route in spec["paths"], route


def test_user_lists_equal_the_cli(server: Server) -> None:
    """Stored and live lists, with context: the HTTP document is the CLI's --json document."""
    for user in [*_users(server.project, 3), "nobody-at-all"]:
        for query_string, flags in (("k=5", ["--k", "5"]), ("k=7&live=true&explain=true", ["--k", "7", "--live", "--explain"])):  # fmt: skip
            status, doc = server.get(f"/v1/recommend/user/{user}?{query_string}")
            cli = recctl(server.project, "--json", "recommend", "--user", user, *flags)
            assert cli.returncode == 0, cli.stderr
            assert status == 200
            assert doc == json.loads(cli.stdout), (user, query_string)
    assert doc["state"] == "new" and doc["items"], "an unknown visitor gets the new-visitor list"


def test_item_session_rerank_segments_equal_the_cli(server: Server) -> None:
    user = _users(server.project, 1)[0]
    status, doc = server.get(f"/v1/recommend/user/{user}?k=4")
    items = [it["item_id"] for it in doc["items"]]
    status, http = server.get(f"/v1/recommend/item/{items[0]}?k=4")
    cli = recctl(server.project, "--json", "recommend", "--item", items[0], "--k", "4")
    assert status == 200 and http == json.loads(cli.stdout) and http["items"]
    status, http = server.post("/v1/rerank", {"user_id": user, "items": items[::-1], "impact": 80})
    cli = recctl(server.project, "--json", "rerank", "--user", user, "--impact", "80", *items[::-1])
    assert status == 200 and http == json.loads(cli.stdout)
    events = [{"item_id": items[0], "event_type": "view"}, {"item_id": items[1], "event_type": "add_to_cart"}]
    status, http = server.post("/v1/recommend/session", {"events": events, "k": 5})
    lines = "".join(json.dumps(e) + "\n" for e in events)
    cli = subprocess.run([sys.executable, "-m", "recctl", "--json", "recommend", "--session", "-", "--k", "5"],
                         cwd=server.project, env=_env(), input=lines, capture_output=True, text=True, check=False)  # fmt: skip
    assert status == 200 and http == json.loads(cli.stdout) and http["session_events"] == 2
    status, http = server.get(f"/v1/segments/{user}")
    cli = recctl(server.project, "--json", "segments", "show", user)
    assert status == 200 and http == json.loads(cli.stdout)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("POST", "/v1/rerank", b'{"user_id": "u1", "items": [', 400, "json"),
        ("POST", "/v1/rerank", {"user_id": "u1"}, 400, "items"),
        ("POST", "/v1/rerank", {"user_id": "u1", "items": ["a"], "impact": 101}, 400, "impact"),
        (
            "POST",
            "/v1/rerank",
            {"user_id": "u1", "items": [f"p{i}" for i in range(1001)]},
            413,
            "at most 1000",
        ),
        ("POST", "/v1/rerank", {"user_id": "u1", "items": ["x" * 100] * 300}, 413, "max_body_bytes"),
        ("POST", "/v1/recommend/session", {"events": [], "surprise": 1}, 400, "surprise"),
        ("GET", "/v1/recommend/user/u1?k=0", None, 400, "k"),
        ("GET", "/v1/recommend/user/u1?list=wishlist", None, 400, "wishlist"),
        ("GET", "/v1/recommend/item/no-such-item", None, 404, "unknown item"),
        ("GET", "/v1/recommend/item/p0001?kind=sideways", None, 400, "sideways"),
        ("GET", "/v1/recommend/user/" + "u" * 300, None, 400, "printable"),
        ("POST", "/v1/admin/reload", None, 401, "api key"),
    ],
)
def test_bad_requests_get_an_error_document(
    server: Server, method: str, path: str, body: Any, status: int, words: str
) -> None:
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    got, doc = server.call(method, path, data, {"content-type": "application/json"})
    assert got == status, doc
    assert set(doc) == {"error", "hint", "exit_code"}
    assert words.lower() in (doc["error"] + " " + (doc["hint"] or "")).lower(), doc


def test_admin_reload_with_the_key_and_metrics(server: Server) -> None:
    assert server.post("/v1/admin/reload", b"", authorization="Bearer wrong")[0] == 401
    status, doc = server.post("/v1/admin/reload", b"", authorization=f"Bearer {KEY}")
    assert status == 200 and doc["run_id"] == _promoted(server.project)
    assert server.post("/v1/admin/reload", b"", **{"x-api-key": KEY})[0] == 200
    server.get("/v1/recommend/user/u1?k=3")
    status, text = server.get("/metrics")
    assert status == 200
    assert f'recctl_run_info{{run_id="{_promoted(server.project)}"}} 1.0' in text
    assert 'recctl_requests_total{method="GET",route="/v1/recommend/user/{user_id}",status="200"}' in text
    assert 'recctl_request_seconds_bucket{le="0.001",route="/v1/recommend/user/{user_id}"}' in text
    assert 'recctl_events_total{outcome="accepted"} 0.0' in text


def test_writers_run_while_serving_and_a_new_run_is_picked_up_without_errors(server: Server) -> None:
    """The server holds no connection to the warehouse: ingest and train (which promotes and refills the
    store) run beside it, and it switches to the new run while requests go on, none failing."""
    before = _promoted(server.project)
    users = [*_users(server.project, 5), "nobody-at-all"]
    failures: list[tuple[int, Any]] = []
    answered: list[str] = []
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            status, doc = server.get(f"/v1/recommend/user/{users[i % len(users)]}?k=5")
            if status != 200:
                failures.append((status, doc))
            else:
                answered.append(doc["run_id"])
            i += 1

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        extra = server.project / "extra.ndjson"
        extra.write_text(json.dumps({"user_id": "late-visitor", "item_id": "p0001", "event_type": "view",
                                     "ts": "2025-01-01T00:00:00Z", "session_id": "s-late"}) + "\n")  # fmt: skip
        ing = recctl(server.project, "ingest", "events", str(extra))
        assert ing.returncode == 0, ing.stderr
        quick = server.project / "quick.toml"  # two cheap generators (one for sessions): a run in seconds
        quick.write_text(
            '[[candidates]]\nname = "trending"\nkind = "popular"\n\n'
            '[[candidates]]\nname = "next-item"\nkind = "cooccur"\n\n[ranker]\nenabled = false\n'
        )
        train = recctl(server.project, "--quiet", "--config", str(quick), "train")
        assert train.returncode == 0, train.stderr
        after = _promoted(server.project)
        assert after != before
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.get("/readyz")[1]["run_id"] != after:
            time.sleep(0.2)
        assert server.get("/readyz")[1]["run_id"] == after
        n = len(answered)
        while len(answered) < n + 10:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert failures == []
    assert before in answered and after in answered
    status, doc = server.get("/v1/recommend/user/late-visitor?k=3")
    assert status == 200 and doc["state"] != "new", "the newly ingested visitor's event is in the snapshot"


def _marked(project: Path, marker: str) -> dict[str, int]:
    rows = query(
        project / "recctl.duckdb", f"SELECT page, count(*) FROM events WHERE page LIKE '{marker}%' GROUP BY 1"
    )
    return {str(p): int(n) for p, n in rows}


def _ingest_inbox(project: Path) -> None:
    done = recctl(project, "ingest", "events", "--inbox")
    assert done.returncode == 0, done.stderr


def test_events_are_checked_with_ingests_rules_and_loaded_once(server: Server) -> None:
    auth = {"authorization": f"Bearer {KEY}"}
    good = {"user_id": "ev-user", "session_id": "ev-s", "item_id": "p0001", "event_type": "view",
            "ts": "2025-06-01T10:00:00Z", "page": "ev-a"}  # fmt: skip
    batch = [good, {**good, "event_type": "teleport", "page": "ev-b"}, {**good, "user_id": None,
             "session_id": None, "page": "ev-c"}, {**good, "price": "cheap", "page": "ev-d"},
             {**good, "ts": None, "page": "ev-e"}]  # fmt: skip
    status, doc = server.post("/v1/events", {"events": batch}, **auth)
    assert status == 207, doc
    assert doc["accepted"] == 2 and doc["rejected"] == 3
    assert [(e["index"], e["reason"].split(":")[0]) for e in doc["errors"]] == [
        (1, "unknown event type 'teleport'"),
        (2, "missing user_id and session_id"),
        (3, "price is not a number"),
    ]
    status, doc = server.post("/v1/events", {"events": [batch[1]]}, **auth)
    assert status == 400 and doc["accepted"] == 0 and doc["exit_code"] == 65
    assert server.post("/v1/events", {"events": [good]})[0] == 401
    assert server.post("/v1/events", {"events": [good] * 1001}, **auth)[0] == 413
    time.sleep(1.5)  # the inbox file is closed after inbox_rotate (0.5 s)
    _ingest_inbox(server.project)
    assert _marked(server.project, "ev-") == {"ev-a": 1, "ev-e": 1}, "accepted events, each once; ts stamped"
    _ingest_inbox(server.project)
    assert _marked(server.project, "ev-") == {"ev-a": 1, "ev-e": 1}
    assert list((server.project / "recctl.duckdb.inbox").glob("*.ndjson")) == []
    status, text = server.get("/metrics")
    assert 'recctl_events_total{outcome="accepted"} 2.0' in text
    assert 'recctl_events_total{outcome="rejected"} 4.0' in text


def test_kill_9_loses_no_accepted_event(server: Server) -> None:
    """Batches posted to a second server on the same project, killed with SIGKILL mid-stream: every event
    answered 2xx is in the warehouse after the next ingest, exactly once."""
    victim = _start(server.project)
    acked: list[str] = []
    sent: list[str] = []

    def post() -> None:
        for b in range(400):
            pages = [f"kill-{b}-{i}" for i in range(10)]
            sent.extend(pages)
            events = [{"user_id": "kill-user", "item_id": "p0002", "event_type": "view", "page": p,
                       "ts": f"2025-06-02T10:{b // 60:02d}:{b % 60:02d}.{i:06d}Z"} for i, p in enumerate(pages)]  # fmt: skip
            try:
                status, _ = victim.post("/v1/events", {"events": events}, authorization=f"Bearer {KEY}")
            except OSError:
                return  # the server is gone
            if status == 200:
                acked.extend(pages)

    writer = threading.Thread(target=post)
    writer.start()
    deadline = time.monotonic() + 30
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.proc.kill()
    victim.proc.wait(timeout=10)
    writer.join(timeout=60)
    assert len(acked) >= 300
    _ingest_inbox(server.project)
    _ingest_inbox(server.project)  # a second run adds nothing
    loaded = _marked(server.project, "kill-")
    assert set(acked) <= set(loaded), "an acknowledged event is missing"
    assert set(loaded.values()) == {1}, "an event was loaded twice"
    assert set(loaded) <= set(sent)


def test_a_visitors_events_reach_their_next_list_at_once_and_count_once_after_ingest(server: Server) -> None:
    key = "session:fresh-visit"
    status, before = server.get(f"/v1/recommend/user/{key}?k=6")
    assert status == 200 and before["state"] == "new" and before["strategy"] == "trending"
    viewed = [
        it["item_id"]
        for it in server.get(f"/v1/recommend/user/{_users(server.project, 1)[0]}?k=2")[1]["items"]
    ]
    events = [{"session_id": "fresh-visit", "item_id": item, "event_type": "view"} for item in viewed]
    assert server.post("/v1/events", {"events": events}, authorization=f"Bearer {KEY}")[0] == 200
    status, after = server.get(f"/v1/recommend/user/{key}?k=6")
    assert status == 200 and after["state"] == "returning" and after["strategy"] == "session"
    assert [it["item_id"] for it in after["items"]] != [it["item_id"] for it in before["items"]]
    time.sleep(1.5)
    _ingest_inbox(server.project)
    deadline = time.monotonic() + 30  # the next snapshot holds the events: the server answers as the CLI does
    while time.monotonic() < deadline:
        status, http = server.get(f"/v1/recommend/user/{key}?k=6")
        cli = json.loads(recctl(server.project, "--json", "recommend", "--user", key, "--k", "6").stdout)
        if http == cli:
            break
        time.sleep(0.5)
    assert http == cli and http["state"] == "returning"
