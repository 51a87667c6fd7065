"""Liveness, readiness and Prometheus metrics (open routes, no authentication).

    GET /healthz   200 while the process serves requests
    GET /readyz    200 {"status": "ready", "checks": {...}} when every readiness check
                   passes (chain reachable and holding the manifest's contracts, database
                   answers, background loops alive — or, in a standby worker of
                   `serve --workers N`, "standby: loops run in worker pid X"); 503
                   {"status": "not_ready", ...} naming the failing checks otherwise
    GET /metrics   Prometheus text format from the app's own CollectorRegistry — or, when
                   the node runs as several worker processes (PROMETHEUS_MULTIPROC_DIR set
                   by `twinledger serve --workers N`), the sum over all of them

Request metrics are labelled by route *template* (`/v1/assets/{asset_id}`), never by raw
path, so label cardinality stays bounded; unmatched paths share "<unmatched>".
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess, values
from starlette.types import ASGIApp, Message, Receive, Scope, Send

router = APIRouter(tags=["health"])

# Returns if ready — None, or a note reported in place of "ok" (e.g. a standby worker's
# loops); raises (with a public message) if not ready.
ReadyCheck = Callable[[], str | None]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def multiprocess_dir() -> Path | None:
    """Where this process's metric values live when prometheus_client runs in
    multiprocess mode (it decides once, from the environment, at import), else None."""
    path = os.environ.get(MULTIPROC_ENV)
    return Path(path) if path and values.ValueClass is not values.MutexValue else None


class Metrics:
    """One CollectorRegistry per app (several apps in one process never collide). In
    multiprocess mode the values are files shared by the node's worker processes and
    `collect_registry()` reads them all."""

    def __init__(self) -> None:
        self.multiprocess_dir = multiprocess_dir()
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("twinledger_http_requests_total", "HTTP requests by route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("twinledger_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry)
        # livesum: across workers, the sum over the processes still alive
        self.in_flight = Gauge("twinledger_http_requests_in_flight", "HTTP requests being served",
                               registry=self.registry, multiprocess_mode="livesum")

    def collect_registry(self) -> CollectorRegistry:
        """The registry /metrics exposes: this app's own, or every worker's values."""
        if self.multiprocess_dir is None:
            return self.registry
        _forget_dead_workers(self.multiprocess_dir)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.multiprocess_dir))
        return registry


def _forget_dead_workers(path: Path) -> None:
    """Drop the live gauges of worker processes that are gone (a SIGKILLed worker never
    cleans up after itself; its counters stay, they are history)."""
    try:
        names = os.listdir(path)
    except OSError:
        return
    for pid in {int(m.group(1)) for m in map(_LIVE_GAUGE_FILE.fullmatch, names) if m}:
        if not process_alive(pid):
            multiprocess.mark_process_dead(pid, str(path))


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class MetricsMiddleware:
    """Pure ASGI middleware (streams untouched) counting every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    checks: dict[str, ReadyCheck] = request.app.state.node.ready_checks
    results: dict[str, str] = {}
    failed = False
    for name, check in checks.items():
        try:
            results[name] = check() or "ok"
        except Exception as exc:  # a failing check is data here, not an error
            results[name] = str(exc) or type(exc).__name__
            failed = True
    return JSONResponse({"status": "not_ready" if failed else "ready", "checks": results},
                        status_code=503 if failed else 200)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.node.metrics.collect_registry()), media_type=CONTENT_TYPE_LATEST)
