"""`twinledger serve --workers N`: one organisation node as N worker processes on one port.

One node process is bound to one core by the GIL; key release is CPU work (signature
checks, age header rewraps), so a node on a multi-core machine runs several processes:

    prepare_node(settings)  # the serve process: build the node once (errors, schema)
    run_workers(settings)   # ... then supervise N workers until SIGINT/SIGTERM
    worker_app()            # what each worker builds (an ASGI app factory, from TWINLEDGER_*)

The serve process (the parent) first builds the node once the ordinary way (create_app):
that checks the keystore, manifest and database and gives a clear error before any
worker starts, and it creates the database schema exactly once (workers racing
CREATE TABLE on SQLite fail with "table already exists"). It then exports its effective
settings as TWINLEDGER_* variables, points prometheus_client's multiprocess mode at a
fresh directory under `<org dir>/run/` (removed at exit), and hands the listening socket
to uvicorn's multi-process supervisor, which spawns the workers and replaces any that
dies. Workers build their app from the environment (the passphrase too: env or file).

In the workers: the background loops run in exactly one of them (api/leadership.py,
api/app.py); every answer carries `X-TwinLedger-Worker: <pid>`; /metrics sums all workers.
The audit log (seqs from a counter row) and request nonces are safe across processes; the
org account's transaction nonces are handed out under a flock on `<org dir>/tx.lock`
shared by the workers (ledger/tx.py TransactionSender.nonce_lock).

A worker whose app cannot be built exits with uvicorn's STARTUP_FAILURE code: the
supervisor then stops (instead of restarting it forever) and serve exits non-zero.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.routers.health import MULTIPROC_ENV, process_alive
from api.settings import NodeSettings

log = logging.getLogger("twinledger.api")

WORKER_HEADER = b"x-twinledger-worker"
RUN_DIR = "run"  # under the org dir: per-run state of `serve --workers`
TX_LOCK_FILE = "tx.lock"  # under the org dir: the workers take turns with the account's nonces
_METRICS_DIR = re.compile(r"metrics-(\d+)-\w+")
LOG_FORMAT = "%(levelname)s:     %(name)s: %(message)s"


class WorkerHeader:
    """Pure ASGI middleware: `X-TwinLedger-Worker: <pid>` on every answer (which worker
    served a request — for operators, tests and load balancing checks)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.header = (WORKER_HEADER, str(os.getpid()).encode("ascii"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_worker(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_worker)


def export_settings(settings: NodeSettings) -> None:
    """Put the serve command's effective flags where the workers' load_settings() finds
    them (the workers are fresh interpreters that inherit only the environment)."""
    os.environ.update({
        "TWINLEDGER_ORG": str(settings.org),
        "TWINLEDGER_HOME": str(settings.home.absolute()),
        "TWINLEDGER_HOST": settings.host,
        "TWINLEDGER_PORT": str(settings.port),
        "TWINLEDGER_RPC_URL": settings.rpc_url,
        "TWINLEDGER_WORKERS": str(settings.workers),
    })


def worker_app():
    """uvicorn's app factory in each worker: the node of the org in TWINLEDGER_*."""
    from ledger.anvil import die_with_parent

    die_with_parent()  # a SIGKILLed supervisor leaves no worker holding the port
    from uvicorn.config import STARTUP_FAILURE

    from api.app import create_app
    from api.leadership import LOCK_FILE
    from api.settings import load_settings

    try:
        settings = load_settings()
        logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
        app = create_app(settings, loop_lock=settings.org_dir / LOCK_FILE)
        sender = app.state.node.ledger.sender
        if sender is not None:
            sender.nonce_lock = settings.org_dir / TX_LOCK_FILE
    except Exception as exc:  # the parent built the same app a moment ago: say what changed
        print(f"error: worker {os.getpid()} cannot build the node: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)
    app.add_middleware(WorkerHeader)
    return app


# -- the supervising parent ------------------------------------------------------------------


def new_metrics_dir(org_dir: Path) -> Path:
    """A fresh, empty directory for this run's multiprocess metric files; directories
    left by runs whose serve process is gone (killed) are removed first."""
    root = org_dir / RUN_DIR
    root.mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():
        match = _METRICS_DIR.fullmatch(entry.name)
        if match and entry.is_dir() and not process_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"metrics-{os.getpid()}-", dir=root))


def prepare_node(settings: NodeSettings) -> None:
    """Build the node once in the serve process and let it go: any error is raised here,
    clearly, before a worker starts, and the database schema is created exactly once."""
    from api.app import close_node, create_app

    probe = create_app(settings)
    close_node(probe.state.node)


def run_workers(settings: NodeSettings) -> int:
    """Serve the node as settings.workers processes until SIGINT/SIGTERM (call
    prepare_node first); the exit status (non-zero if a worker could not start)."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    export_settings(settings)
    metrics_dir = new_metrics_dir(settings.org_dir)
    os.environ[MULTIPROC_ENV] = str(metrics_dir)
    try:
        config = uvicorn.Config("api.workers:worker_app", factory=True, host=settings.host, port=settings.port,
                                workers=settings.workers, log_level=settings.log_level, access_log=False)
        sock = config.bind_socket()
        try:
            supervisor = Multiprocess(config, sockets=[sock])
            supervisor.run()
        finally:
            sock.close()
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    failed = [p.pid for p in supervisor.processes if p.exitcode == STARTUP_FAILURE]
    if failed:
        log.error("worker(s) %s could not start; the node stopped", ", ".join(map(str, failed)))
        return 1
    return 0


__all__ = ["WORKER_HEADER", "WorkerHeader", "export_settings", "new_metrics_dir", "prepare_node", "run_workers",
           "worker_app"]
