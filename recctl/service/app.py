"""The HTTP routes of `recctl serve` (FastAPI): each parses, picks the current snapshot, calls the same
``recctl.serving`` function as the CLI and returns its JSON document unchanged.

Errors are answered in one place: a ``RecctlError`` with its ``http_status`` and the CLI's error document
(``{"error", "hint", "exit_code"}``), a malformed request with 400 in the same shape, anything else with
500 and no traceback (that goes to the server's stderr). See README "HTTP service" for the routes.

No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations at run time, and
the ones local to :func:`create_app` (the snapshot dependency) must be objects, not strings.
"""

import hmac
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from recctl.config import RecctlConfig
from recctl.errors import (
    AuthError,
    ConfigError,
    ExitCode,
    ForbiddenError,
    NotTrainedError,
    RecctlError,
    TooLargeError,
)
from recctl.service.limits import BodyLimit
from recctl.service.metrics import Metrics
from recctl.service.recent import Recent
from recctl.service.snapshot import Holder, Snapshot

MAX_ID = 256  # characters of a user or item id in a path
SNIPPET = Path(__file__).with_name("recctl.js")


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[dict[str, Any]] = Field(description="the visitor's events, fields as in the events table")
    k: int | None = Field(None, ge=1, le=1000)
    page: str | None = Field(None, description="the category page being shown (path prefix)")
    item: str | None = Field(None, description="the product page being shown")
    explain: bool = False


class EventsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[dict[str, Any]] = Field(description="events in the events table's schema (ts, user_id, "
                                         "session_id, item_id, event_type, price, query, page, …)")  # fmt: skip


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=MAX_ID)
    items: list[str] = Field(min_length=1)
    impact: float | None = Field(None, ge=0, le=100)


def _error(status: int, message: str, hint: str | None, code: int) -> JSONResponse:
    return JSONResponse({"error": message, "hint": hint, "exit_code": code}, status_code=status)


def _doc(doc: dict[str, Any]) -> JSONResponse:
    """The library's document as the answer, encoded once by the JSON encoder the CLI uses (no response
    model: FastAPI would walk and re-validate every list)."""
    return _JSON(doc)


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        from recctl.console import to_json

        return to_json(content).encode("utf-8")


class Measured:
    """Requests and latency per route for /metrics, as plain ASGI middleware (Starlette's
    ``BaseHTTPMiddleware`` costs about a millisecond a request)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def sent(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route = scope.get("route")
            self.metrics.observe(getattr(route, "path", "unmatched"), scope["method"], status[0],
                                 time.perf_counter() - t0)  # fmt: skip


def _check_id(value: str, what: str) -> str:
    if not value.strip() or len(value) > MAX_ID or not value.isprintable():
        raise ConfigError(f"{what} must be 1 to {MAX_ID} printable characters")
    return value


def create_app(cfg: RecctlConfig, holder: Holder) -> FastAPI:
    """The application over ``holder``'s snapshots (started and stopped with the app's lifespan)."""
    import asyncio
    from contextlib import asynccontextmanager

    from recctl.ingest.inbox import Inbox, check_events, inbox_dir
    from recctl.serving import service

    metrics = Metrics(holder)
    inbox = Inbox(inbox_dir(cfg), cfg.service.inbox_rotate)
    recent = Recent(cfg.service.recent_visitors, cfg.service.recent_events, cfg.service.recent_max_age)

    def prune(snap: Snapshot) -> None:
        with snap.warehouse() as wh:
            recent.prune(wh.con)

    holder.on_swap.append(prune)

    async def rotate() -> None:
        while True:
            await asyncio.sleep(cfg.service.reload_interval)
            await asyncio.to_thread(inbox.tick)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        holder.start()
        ticker = asyncio.create_task(rotate())
        yield
        ticker.cancel()
        inbox.close()  # the open inbox file is closed: `ingest --inbox` takes it
        holder.stop()

    app = FastAPI(title="recctl", version="1", lifespan=lifespan,
                  summary="recommendations and event collection for a shop")  # fmt: skip
    if cfg.service.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cfg.service.cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["*"])  # fmt: skip
    app.add_middleware(BodyLimit, max_bytes=cfg.service.max_body_bytes)

    app.add_middleware(Measured, metrics=metrics)

    @app.exception_handler(RecctlError)
    async def recctl_error(_: Request, exc: RecctlError) -> JSONResponse:
        return _error(exc.http_status, exc.message, exc.hint, int(exc.exit_code))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(400, f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request",
                      "see /openapi.json for the request's shape", int(ExitCode.USAGE))  # fmt: skip

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        traceback.print_exception(exc, file=sys.stderr)
        return _error(500, f"internal error: {type(exc).__name__}", None, int(ExitCode.INTERNAL))

    def snapshot() -> Snapshot:
        snap = holder.current
        if snap is None:
            raise NotTrainedError(holder.last_error or "the service has no snapshot yet",
                                  hint="`recctl train` promotes a run; the service picks it up")  # fmt: skip
        return snap

    def key_of(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.headers.get("x-api-key")

    def need_key(request: Request) -> None:
        want = cfg.service.api_key
        if want is None:
            raise ForbiddenError(
                "this route needs [service] api_key (or RECCTL_API_KEY) to be set on the server"
            )
        got = key_of(request)
        if got is None or not hmac.compare_digest(got.encode(), want.encode()):
            raise AuthError("missing or wrong API key", hint="send Authorization: Bearer KEY or X-API-Key")

    def reads(request: Request) -> None:
        if cfg.service.require_key_for_reads:
            need_key(request)

    Snap = Annotated[Snapshot, Depends(snapshot)]
    K = Annotated[int | None, Query(ge=1, le=1000, description="list length (default [serving] k)")]

    @app.get("/healthz", summary="the process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="a promoted run is loaded", responses={503: {"description": "not ready"}})
    def readyz() -> JSONResponse:
        snap = holder.current
        if snap is None:
            return JSONResponse({"ready": False, "error": holder.last_error}, status_code=503)
        return JSONResponse({"ready": True, "reloads": holder.reloads, "last_error": holder.last_error,
                             **snap.describe()})  # fmt: skip

    @app.get("/v1/recctl.js", summary="the shop's JavaScript snippet (events and lists from a page)")
    def snippet() -> Response:
        return Response(SNIPPET.read_bytes(), media_type="application/javascript; charset=utf-8",
                        headers={"cache-control": "public, max-age=300"})  # fmt: skip

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text format")
    def prometheus() -> PlainTextResponse:
        body, content_type = metrics.render()
        return PlainTextResponse(body, media_type=content_type)

    @app.get("/v1/recommend/user/{user_id}", dependencies=[Depends(reads)])
    def recommend_user(user_id: str, snap: Snap, k: K = None,
                       page: Annotated[str | None, Query(description="category page shown")] = None,
                       item: Annotated[str | None, Query(description="product page shown")] = None,
                       live: bool = False, explain: bool = False,
                       list_name: Annotated[str, Query(alias="list", description="main | buy-again")] = "main",
                       ) -> JSONResponse:  # fmt: skip
        """The same document as `recctl --json recommend --user` (stored list when fresh, else ranked now);
        events this visitor sent to /v1/events that the warehouse does not hold yet are in its history."""
        _check_id(user_id, "user_id")
        with snap.warehouse() as wh:
            return _doc(service.recommend_user(wh, cfg, user_id, k=k, explain=explain, category=page,
                                          current_item=item, live=live, list_name=list_name,
                                          served=snap.served, recent=recent.frame(user_id),
                                          store=snap.stored))  # fmt: skip

    @app.get("/v1/recommend/item/{item_id}", dependencies=[Depends(reads)])
    def recommend_item(item_id: str, snap: Snap, k: K = None,
                       kind: Annotated[str, Query(description="similar | bought-together | viewed-together")]
                       = "similar") -> JSONResponse:  # fmt: skip
        """The same document as `recctl --json recommend --item ID --strategy KIND`."""
        from recctl.names import one_of
        from recctl.serving.item import STRATEGIES

        one_of(kind, STRATEGIES, what="kind", where="kind")
        with snap.warehouse() as wh:
            return _doc(service.recommend_item(wh, cfg, _check_id(item_id, "item_id"), strategy=kind, k=k,
                                               served=snap.served))  # fmt: skip

    @app.post("/v1/recommend/session", dependencies=[Depends(reads)])
    def recommend_session(req: SessionRequest, snap: Snap) -> JSONResponse:
        """An anonymous visitor's events → the same document as `recctl --json recommend --session`."""
        import json

        if len(req.events) > cfg.service.max_items:
            raise _too_many("events", len(req.events), cfg.service.max_items)
        text = "".join(json.dumps(e) + "\n" for e in req.events)
        with snap.warehouse() as wh:
            return _doc(service.recommend_session(wh, cfg, text, k=req.k, explain=req.explain,
                                                  category=req.page, current_item=req.item, served=snap.served))  # fmt: skip

    @app.post("/v1/rerank", dependencies=[Depends(reads)])
    def rerank(req: Annotated[RerankRequest, Body()], snap: Snap) -> JSONResponse:
        """A given list re-ranked 1:1 for the visitor: the same document as `recctl --json rerank`."""
        from recctl.serving.profile import catalog_index
        from recctl.serving.rerank import run_rerank

        if len(req.items) > cfg.service.max_items:
            raise _too_many("items", len(req.items), cfg.service.max_items)
        with snap.warehouse() as wh:
            index = catalog_index(wh.con, str(wh.path))  # the catalog in memory, rebuilt per snapshot
            return _doc(run_rerank(wh.con, cfg, _check_id(req.user_id, "user_id"), req.items, req.impact,
                                   index=index))  # fmt: skip

    @app.get("/v1/segments/{user_id}", dependencies=[Depends(reads)])
    def segments(user_id: str, snap: Snap) -> JSONResponse:
        """The same document as `recctl --json segments show`."""
        from recctl.rules.segments import show_user

        with snap.warehouse() as wh:
            return _doc(show_user(wh.con, cfg, _check_id(user_id, "user_id")))

    @app.post("/v1/events", dependencies=[Depends(need_key)], status_code=200,
              responses={207: {"description": "some events rejected (each with its reason)"},
                         400: {"description": "every event rejected"}})  # fmt: skip
    def events(req: EventsRequest) -> JSONResponse:
        """Collect events: each is checked with `recctl ingest`'s rules; the accepted ones are on disk in
        the inbox (fsync'd) before the answer, and `recctl ingest events --inbox` loads them exactly once.
        200: all accepted; 207: some rejected, with the index and reason of each; 400: none accepted."""
        if len(req.events) > cfg.service.max_items:
            raise _too_many("events", len(req.events), cfg.service.max_items)
        accepted, rejected, typed = check_events(cfg, req.events)
        inbox.append(accepted)  # on disk before the answer; then visible to the visitor's next list
        recent.add(typed)
        metrics.events.labels(outcome="accepted").inc(len(accepted))
        metrics.events.labels(outcome="rejected").inc(len(rejected))
        doc: dict[str, Any] = {"accepted": len(accepted), "rejected": len(rejected), "errors": rejected}
        if rejected and not accepted:
            return JSONResponse({"error": f"all {len(rejected)} events rejected", "hint": rejected[0]["reason"],
                                 "exit_code": int(ExitCode.DATA), **doc}, status_code=400)  # fmt: skip
        return JSONResponse(doc, status_code=207 if rejected else 200)

    @app.post("/v1/admin/reload", dependencies=[Depends(need_key)], summary="check for a new run or data now")
    def reload() -> dict[str, Any]:
        swapped = holder.refresh()
        snap = snapshot()
        return {"swapped": swapped, "last_error": holder.last_error, **snap.describe()}

    return app


def _too_many(what: str, n: int, limit: int) -> TooLargeError:
    return TooLargeError(f"{n} {what} in one request; at most {limit}", hint="[service] max_items")
