"""`twinledger sync` — the twin sync service on the command line.

    twinledger sync --org NAME --into DIR [--asset A ...] [--once] [--purge-on-revoke]
                    [--interval S] [--metrics-port P] [--json] [--home DIR] [--node URL] [--rpc URL]

Prints one line per event as it happens: a materialised version with its sync lag
(registration block time → materialised), an asset no longer followed and why, a purge.
`--json`: one JSON object per line instead ({"event": "materialised" | "stopped" |
"purged" | "error", ...}; with --once a last {"event": "pass", ...} line).
Errors of a step go to stderr as `error: …` lines; with --once any of them makes the exit
status 1, while following they are retried on the next pass. SIGINT/SIGTERM: the version
being fetched is finished, then the command exits 0 (a second signal aborts at once,
exit 130; the half-fetched version is cleaned up by the next run). `--metrics-port`
serves Prometheus metrics on 127.0.0.1:P (twinledger_sync_lag_seconds, …).
Options shared with the other commands (--org, --home, --node, --rpc, passphrase from
TWINLEDGER_PASSPHRASE…) behave as in `twinledger asset` (api/cli/assets.py).
"""
from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from api.cli.assets import JsonOpt, NodeOpt, OrgOpt, open_client
from api.cli.org import HomeOpt, RpcOpt, cli_errors
from services.sync.errors import SyncError
from services.sync.report import Event, Materialised, Purged, StoppedAsset, SyncFailure, SyncReport


def register(app: typer.Typer) -> None:
    app.command("sync")(sync)


def _sync_errors(fn: Any) -> Any:
    """SyncError → one `error: …` line, exit 1 (the other domain errors: cli_errors)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SyncError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("error: interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


class _Printer:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def __call__(self, event: Event) -> None:
        if self.as_json:
            line = json.dumps(event.to_json(), sort_keys=True)
            if isinstance(event, SyncFailure):
                typer.echo(f"error: {event}", err=True)
        elif isinstance(event, Materialised):
            line = (f"materialised {event.asset_id}@{event.version} -> {event.path} "
                    f"({event.size} bytes, lag {event.lag_seconds:.1f} s)")
        elif isinstance(event, StoppedAsset):
            line = f"stopped following asset {event.asset_id}: {event.reason}" + (
                f" ({event.detail})" if event.detail else "")
        elif isinstance(event, Purged):
            line = f"purged asset {event.asset_id} ({len(event.versions)} local versions deleted)"
        else:
            typer.echo(f"error: {event}", err=True)
            return
        typer.echo(line)
        sys.stdout.flush()

    def summary(self, report: SyncReport) -> None:
        counts = {"materialised": len(report.materialised), "stopped": len(report.stopped),
                  "purged": len(report.purged), "errors": len(report.errors)}
        if self.as_json:
            typer.echo(json.dumps({"event": "pass", **counts, "following": report.following}, sort_keys=True))
        else:
            following = ", ".join(map(str, report.following)) or "none"
            typer.echo(f"pass done: {counts['materialised']} materialised, {counts['stopped']} stopped, "
                       f"{counts['purged']} purged, {counts['errors']} errors; following assets: {following}")


def _on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@_sync_errors
@cli_errors
def sync(
    org: OrgOpt,
    into: Annotated[Path, typer.Option("--into", help="Directory to materialise into: DIR/<asset>/<version>/…")],
    asset: Annotated[list[int] | None, typer.Option("--asset", help="Follow only this asset (repeatable)")] = None,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit (status 1 if a step failed)")] = False,
    purge_on_revoke: Annotated[bool, typer.Option(
        "--purge-on-revoke", help="Delete the local copies of an asset whose grant ended")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.05, help="Seconds between passes")] = 1.0,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", min=1, max=65535, help="Serve Prometheus metrics on 127.0.0.1:PORT")] = None,
    home: HomeOpt = None, node: NodeOpt = None, rpc: RpcOpt = None, as_json: JsonOpt = False,
) -> None:
    """Follow the assets this org holds SYNC on and materialise each new version under DIR."""
    from services.sync.service import SyncService

    warn = logging.StreamHandler(sys.stderr)
    warn.setFormatter(logging.Formatter("warning: %(message)s"))
    logger = logging.getLogger("twinledger.sync")
    logger.addHandler(warn)
    logger.setLevel(logging.WARNING)
    logger.propagate = False

    registry = None
    if metrics_port is not None:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry()
        start_http_server(metrics_port, addr="127.0.0.1", registry=registry)
    stop = threading.Event()
    _on_signals(stop)
    printer = _Printer(as_json)
    with open_client(home, org, node, rpc) as client, \
            SyncService(client, into, assets=asset, purge_on_revoke=purge_on_revoke, poll_interval=interval,
                        registry=registry, on_event=printer) as service:
        if not once:
            service.run(stop)
            return
        report = service.run_once(stop)
        printer.summary(report)
    if report.errors:
        raise typer.Exit(1)
