#!/usr/bin/env python3
"""`recctl serve` under load on Complete Journey: throughput and p50 / p99 per route, the server's peak
memory, and a promotion during load with zero failed requests (issue 16). Loopback only, bounded.

Usage (from anywhere; paths are relative to the repository root)::

    .venv/bin/python benchmarks/serve.py                     # `make bench-serve`: ingest, train, measure
    .venv/bin/python benchmarks/serve.py --reuse             # measure again on the kept project
    .venv/bin/python benchmarks/serve.py --project benchmarks/work/train --config benchmarks/work/train/train.toml

The project is Complete Journey ingested and trained with ``benchmarks/pipeline/completejourney.toml`` in
``benchmarks/work/serve/`` (as ``benchmarks/latency.py`` does), or any trained project given with
``--project`` / ``--config``. ``recommend --all`` fills the online store, then one ``recctl serve`` process
(one worker) answers, and the load comes from ``wrk`` (Debian's package, a C load generator; one thread,
``--connections`` connections, closed loop, ``--seconds`` per route; Lua scripts rotate the users and
carry the POST bodies):

- ``stored``: ``GET /v1/recommend/user/U`` over the store's users (the online store's path);
- ``live``: the same with ``live=true`` (the pipeline ranks now);
- ``rerank_100``: ``POST /v1/rerank`` of 100 items;
- ``events_100``: ``POST /v1/events`` batches of 100 view events (events/s = requests/s × 100).

Then ``promote``: ``stored`` again while ``recctl ingest`` (a small events file) and ``recctl train``
(which promotes) run beside the server; wrk is stopped when the server serves the new run. Every run
must answer only 2xx (wrk's "Non-2xx" count) else the benchmark fails. Server peak RSS: ``VmHWM`` of
its /proc status at the end. Targets (issue 16): stored p99 ≤ 10 ms at ≥ 500 requests/s, live p99 ≤
50 ms, rerank of 100 p99 ≤ 20 ms, events ≥ 5,000/s, zero failed requests during the promotion. Writes
``benchmarks/results/serve.json``; exit 1 when a target is missed, 2 when the run is wrong. The client
shares the two cores with the server: the figures are a floor for a separate client.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import latency as L  # benchmarks/latency.py: the Complete Journey project set-up
import quality as Q
from _env import cpu_busy, git_commit, machine, recctl_cmd

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "work" / "serve"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "serve.json"
KEY = "bench-serve-key"
TARGETS = {"stored": ("p99_ms", 10.0, 500.0), "live": ("p99_ms", 50.0, None),
           "rerank_100": ("p99_ms", 20.0, None), "events_100": ("events_per_s", 5000.0, None)}  # fmt: skip

LUA_GET = """
local users = {%(users)s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/v1/recommend/user/" .. users[(i %% #users) + 1] .. "%(query)s")
end
"""
LUA_POST = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
local bodies = {%(bodies)s}
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, "%(path)s", nil, bodies[(i %% #bodies) + 1])
end
"""


def _lua_str(s: str) -> str:
    return "[==[" + s + "]==]"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def wrk(url: str, script: str, seconds: float, connections: int, *, until: Any = None) -> dict[str, Any]:
    """One wrk run; ``until``: a callable polled every second, wrk is stopped (SIGINT) once it is true."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{int(seconds)}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        f.name,
        url,
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if until is not None:
        while proc.poll() is None and not until():
            time.sleep(1.0)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=seconds + 60)
    os.unlink(f.name)
    if proc.returncode not in (0, -signal.SIGINT):
        raise Q.BenchError(f"wrk failed ({proc.returncode}): {err.strip()}")
    return parse(out)


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise Q.BenchError(f"wrk latency {text!r}")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


def parse(out: str) -> dict[str, Any]:
    """requests/s, the 50 / 99 % latencies, the request count and the non-2xx count from wrk's report."""
    pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if not (pct and rps and n):
        raise Q.BenchError(f"cannot read wrk's report:\n{out}")
    return {"requests": int(n.group(1)), "requests_per_s": round(float(rps.group(1)), 1),
            "p50_ms": round(_ms(pct["50"]), 3), "p99_ms": round(_ms(pct["99"]), 3),
            "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument(
        "--config", type=Path, default=L.DEFAULT_CONFIG, help="to train; with --project: its config"
    )
    ap.add_argument("--project", type=Path, help="a trained project to serve (its folder; no training)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seconds", type=float, default=20.0, help="per route")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--keep", action="store_true", help="keep the project in benchmarks/work/serve/")
    ap.add_argument("--reuse", action="store_true", help="reuse a kept project (no ingest, no training)")
    ap.add_argument("--no-promote", action="store_true", help="skip the promotion under load")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        Q.log("wrk is not installed (apt-get install wrk)")
        return 2
    busy = cpu_busy()
    if args.project:
        work, cfg = args.project.resolve(), args.config.resolve()
    else:
        work, cfg = WORK, WORK / "configs" / "recctl.toml"
        L.setup(args, cfg, work=WORK)
    recctl = [*recctl_cmd(), "--config", str(cfg)]
    results: dict[str, Any] = {}
    server = None
    try:
        took, _ = L.wall([*recctl, "--quiet", "recommend", "--all"], work)
        Q.log(f"recommend --all: {took:.1f} s")
        port = _free_port()
        env = {**Q.recctl_env(), "RECCTL_API_KEY": KEY}
        server_log = work / "bench-serve-server.log"
        with server_log.open("w") as out:
            server = subprocess.Popen([*recctl, "serve", "--port", str(port)], cwd=work, env=env,
                                      stdout=out, stderr=out)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        t0 = time.perf_counter()
        while True:
            try:
                ready = _get(url + "/readyz")
                break
            except OSError:
                if server.poll() is not None or time.perf_counter() - t0 > 300:
                    raise Q.BenchError(
                        f"the server did not start: {server_log.read_text()[-3000:]}"
                    ) from None
                time.sleep(0.5)
        results["startup_s"] = round(time.perf_counter() - t0, 2)
        Q.log(f"server ready in {results['startup_s']} s on run {ready['run_id']}")
        con = __import__("duckdb").connect(str(ready_db(cfg)), read_only=True)
        users = [r[0] for r in con.sql("SELECT DISTINCT user_id FROM recs ORDER BY 1 LIMIT 500").fetchall()]
        items = [r[0] for r in con.sql("SELECT item_id FROM items ORDER BY item_id LIMIT 1000").fetchall()]
        con.close()
        ids = ", ".join(_lua_str(u) for u in users)
        scripts = {
            "stored": LUA_GET % {"users": ids, "query": "?k=10"},
            "live": LUA_GET % {"users": ids, "query": "?k=10&live=true"},
            "rerank_100": LUA_POST % {"key": KEY, "path": "/v1/rerank", "bodies": ", ".join(
                _lua_str(json.dumps({"user_id": u, "items": items[j % 10 * 100:(j % 10 + 1) * 100]}))
                for j, u in enumerate(users[:50]))},
            "events_100": LUA_POST % {"key": KEY, "path": "/v1/events", "bodies": ", ".join(
                _lua_str(json.dumps({"events": [{"user_id": f"bench-{b}", "session_id": f"s-{b}",
                                                 "item_id": items[(b * 100 + i) % len(items)], "event_type": "view"}
                                                for i in range(100)]})) for b in range(20))},
        }  # fmt: skip
        for name, script in scripts.items():
            r = wrk(url, script, args.seconds, args.connections)
            if name == "events_100":
                r["events_per_s"] = round(r["requests_per_s"] * 100, 1)
            results[name] = r
            Q.log(f"{name}: {r['requests_per_s']:,.0f} requests/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                  f"non-2xx {r['non_2xx']}")  # fmt: skip
        if not args.no_promote:
            results["promote"] = promote_under_load(
                url, scripts["stored"], args, recctl, work, ready["run_id"]
            )
        results["server_peak_mb"] = peak_mb(server.pid)
    except Q.BenchError as exc:
        Q.log(f"benchmark failed: {exc}")
        return 2
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if not args.project and not args.keep and not args.reuse:
            shutil.rmtree(WORK, ignore_errors=True)
    bad = [
        n for n, r in results.items() if isinstance(r, dict) and (r.get("non_2xx") or r.get("socket_errors"))
    ]
    missed = []
    for name, (key, limit, rate) in TARGETS.items():
        got = results[name][key]
        ok = got >= limit if key.endswith("_per_s") else got <= limit
        if rate is not None and results[name]["requests_per_s"] < rate:
            ok = False
        if not ok:
            missed.append(name)
    doc = {"dataset": "completejourney", "connections": args.connections, "seconds_per_route": args.seconds,
           "routes": results, "targets": {k: {"metric": m, "limit": v, "min_requests_per_s": r}
                                          for k, (m, v, r) in TARGETS.items()},
           "missed": missed, "failed_requests_in": bad, "commit": git_commit(), "machine": machine(),
           "cpu_busy_at_start": None if busy is None else round(busy, 2),
           "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "client": "wrk -t1 on the same 2 cores (loopback)"}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    Q.log(
        f"missed: {', '.join(missed) or 'none'}; failed requests in: {', '.join(bad) or 'none'} → {args.out}"
    )
    return 2 if bad else (1 if missed else 0)


def ready_db(cfg: Path) -> Path:
    from recctl.config import load_config

    return load_config(cfg).warehouse.path


def peak_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        return None
    return None


def promote_under_load(url: str, script: str, args: argparse.Namespace, recctl: list[str], work: Path,
                       before: str) -> dict[str, Any]:  # fmt: skip
    """Stored lists under load while an ingest and a train (which promotes) run; wrk stops once the
    server serves the new run."""
    extra = work / "bench-serve-extra.ndjson"
    extra.write_text(json.dumps({"user_id": "bench-late", "item_id": "bench-item", "event_type": "view",
                                 "ts": datetime.now(UTC).isoformat()}) + "\n")  # fmt: skip
    log = (work / "bench-serve-jobs.log").open("w")
    jobs = subprocess.Popen(
        ["sh", "-c", f"{' '.join(recctl)} --quiet ingest events {extra} && {' '.join(recctl)} --quiet train"],
        cwd=work, env=Q.recctl_env(), stdout=log, stderr=log,
    )  # fmt: skip
    t0 = time.perf_counter()
    state: dict[str, Any] = {}

    def switched() -> bool:
        if jobs.poll() is None:
            return False
        state.setdefault("jobs_s", round(time.perf_counter() - t0, 1))
        try:
            state["after"] = _get(url + "/readyz")["run_id"]
        except OSError:
            return False
        return bool(state["after"] != before)

    r = wrk(url, script, 3600, args.connections, until=switched)
    log.close()
    if jobs.returncode != 0:
        raise Q.BenchError(
            f"ingest + train under load failed: {(work / 'bench-serve-jobs.log').read_text()[-3000:]}"
        )
    r |= {"run_before": before, "run_after": state.get("after"), "ingest_train_s": state.get("jobs_s"),
          "switched": state.get("after") not in (None, before)}  # fmt: skip
    Q.log(f"promote under load: {r['requests']:,} requests, non-2xx {r['non_2xx']}, {before} → {r['run_after']} "
          f"(ingest + train {r['ingest_train_s']} s)")  # fmt: skip
    return r


if __name__ == "__main__":
    sys.exit(main())
