"""Liveness, readiness and Prometheus metrics (open routes, no authentication).

    GET /healthz   200 while the process serves requests
    GET /readyz    200 {"status": "ready", "checks": {...}} when every readiness check
                   passes (chain reachable and holding the manifest's contracts, database
                   answers, background loops alive); 503 {"status": "not_ready", ...}
                   naming the failing checks otherwise
    GET /metrics   Prometheus text format from the app's own CollectorRegistry

Request metrics are labelled by route *template* (`/v1/assets/{asset_id}`), never by raw
path, so label cardinality stays bounded; unmatched paths share "<unmatched>".
"""
from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

router = APIRouter(tags=["health"])

ReadyCheck = Callable[[], None]  # returns if ready; raises (with a public message) if not


class Metrics:
    """One CollectorRegistry per app (several apps in one process never collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("twinledger_http_requests_total", "HTTP requests by route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("twinledger_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry)
        self.in_flight = Gauge("twinledger_http_requests_in_flight", "HTTP requests being served",
                               registry=self.registry)


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
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # a failing check is data here, not an error
            results[name] = str(exc) or type(exc).__name__
    ready = all(v == "ok" for v in results.values())
    return JSONResponse({"status": "ready" if ready else "not_ready", "checks": results},
                        status_code=200 if ready else 503)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.node.metrics.registry), media_type=CONTENT_TYPE_LATEST)
