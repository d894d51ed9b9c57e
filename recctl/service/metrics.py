"""`/metrics` of `recctl serve` in Prometheus' text format (prometheus_client, one registry per app):
requests and latency per route, the run in use, snapshot reloads and their age, events accepted and
rejected. With ``--workers N`` each worker process counts its own requests (scrape each, or run one)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from recctl.service.snapshot import Holder

#: seconds: stored lists answer in about a millisecond, live rankings in tens
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, holder: Holder) -> None:
        self.holder = holder
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("recctl_requests", "HTTP requests answered", ["route", "method", "status"],
                                registry=r)  # fmt: skip
        self.latency = Histogram("recctl_request_seconds", "time to answer, per route", ["route"],
                                 buckets=BUCKETS, registry=r)  # fmt: skip
        self.run = Gauge("recctl_run_info", "the run being served (1 for its id)", ["run_id"], registry=r)
        self.reloads = Gauge("recctl_snapshot_reloads", "snapshots taken since start", registry=r)
        self.age = Gauge("recctl_snapshot_age_seconds", "age of the snapshot being served", registry=r)
        self.events = Counter("recctl_events", "events received by /v1/events", ["outcome"], registry=r)
        for outcome in ("accepted", "rejected"):
            self.events.labels(outcome=outcome)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        snap = self.holder.current
        self.run.clear()
        if snap is not None and snap.run_id is not None:
            self.run.labels(run_id=snap.run_id).set(1)
            self.age.set(time.time() - snap.taken_at.timestamp())
        self.reloads.set(self.holder.reloads)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
