"""The app factory of an organisation node.

    app = create_app()                       # settings from TWINLEDGER_* (+ passphrase)
    app = create_app(settings, keys=keys)    # tests / embedding: inject what you have

`create_app` builds everything the routes need once — settings, database engine,
LedgerClient (rpc_url + manifest + the org's account), the vault over the configured block
store, the request authenticator, the event indexer, the audit log and its anchorer — in
one `api.node.Node` (alias NodeContext) kept in `app.state.node` for the dependencies in
api/deps.py and the use cases in api/usecases/. Installed node extensions (entry point
group `twinledger.node_extensions`, e.g. the compute-to-data job router) are installed
last with `install(app, node)`. It does not talk to the chain: a node starts while the
chain is down and reports it in /readyz.

Background work (event indexer, audit anchoring, nonce pruning) runs as named loops in a
`BackgroundLoops` registry, started and stopped by the app's lifespan and reported by
/readyz. Owners add theirs through `LOOP_FACTORIES` (a callable taking the NodeContext
and registering loops) or `create_app(loop_factories=...)`.

Several worker processes of one org (`twinledger serve --workers N`, api/workers.py) build
their apps with `create_app(loop_lock=<org dir>/loops.lock)`: the loops then run only in
the worker holding that lock (api/leadership.py). The others are standbys: their indexer
is a follower (waits poll the database the leader indexes), /readyz reports
"standby: loops run in worker pid X" as passing, and every STANDBY_RETRY_SECONDS they try
the lock again — a leader that died (even by SIGKILL) is replaced by the first standby to
get it.
"""
from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from web3 import Web3

from api.auth import Eip712Domain, LedgerOrgDirectory, NonceStore, OrgDirectory, RequestAuthenticator
from api.errors import ConfigError
from api.http_errors import problem_response, reason_code, register_exception_handlers
from api.keystore import OrgKeys, load_org_keys
from api.leadership import LoopLeadership
from api.node import Node, anchoring_loop, attach_ledger_services, indexer_loop, node_web3
from api.routers.health import Metrics, MetricsMiddleware, ReadyCheck
from api.settings import NodeSettings, load_settings
from ledger import deployment as deployment_mod
from ledger.client import LedgerClient
from ledger.db import make_engine
from ledger.deployment import Deployment
from ledger.errors import DeploymentError
from ledger.indexer import Indexer
from vault.blockstore import BlockStore, FilesystemBlockstore
from vault.kubo import KuboClient
from vault.vault import Vault

log = logging.getLogger("twinledger.api")

HEALTH_RPC_TIMEOUT = 3.0
LOOP_MAX_FAILURES = 3  # consecutive failed steps after which a loop reports "failing"
STANDBY_RETRY_SECONDS = 2.0  # how often a standby worker tries to take the loops over


# -- background loops ----------------------------------------------------------------


@dataclass
class LoopStatus:
    name: str
    interval: float | None
    iterations: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_ok: float | None = None
    started: bool = False
    finished: bool = False


@dataclass
class _Loop:
    status: LoopStatus
    step: Callable[[], Any] | None = None  # periodic: called every `interval` s
    run: Callable[[asyncio.Event], Awaitable[None]] | None = None  # long-running task
    task: asyncio.Task | None = None


class BackgroundLoops:
    """Named background loops of one node, with start/stop and health reporting.

    add(name, step, interval=s)  step() is called every `interval` seconds (sync steps in
                                 a worker thread, async ones awaited); a failing step is
                                 logged and retried next time — after LOOP_MAX_FAILURES
                                 in a row the loop reports "failing".
    add_task(name, run)          `await run(stop_event)` must return soon after the event
                                 is set; returning earlier (or raising) reports "stopped".
    """

    def __init__(self) -> None:
        self._loops: dict[str, _Loop] = {}
        self._stop: asyncio.Event | None = None
        # Set while another worker process of the node runs the loops: why they are not
        # started here (reported by /readyz as passing).
        self.standby: str | None = None

    def add(self, name: str, step: Callable[[], Any], *, interval: float) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._register(_Loop(LoopStatus(name, interval), step=step))

    def add_task(self, name: str, run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        self._register(_Loop(LoopStatus(name, None), run=run))

    def _register(self, loop: _Loop) -> None:
        if loop.status.name in self._loops:
            raise ValueError(f"a background loop named {loop.status.name!r} is already registered")
        if self._stop is not None:
            raise RuntimeError("loops must be registered before the app starts")
        self._loops[loop.status.name] = loop

    async def start(self) -> None:
        self._stop = asyncio.Event()
        for loop in self._loops.values():
            loop.status.started = True
            coro = self._periodic(loop) if loop.step is not None else self._task(loop)
            loop.task = asyncio.create_task(coro, name=f"twinledger-loop-{loop.status.name}")

    @property
    def started(self) -> bool:
        return self._stop is not None

    async def stop(self, timeout: float = 10.0) -> int:
        """Stop every loop; the number that did not end within `timeout` (cancelled, but
        a step already running in a worker thread goes on until it returns)."""
        if self._stop is None:
            return 0
        self._stop.set()
        tasks = [loop.task for loop in self._loops.values() if loop.task is not None]
        if not tasks:
            return 0
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)

    async def _periodic(self, loop: _Loop) -> None:
        assert self._stop is not None and loop.step is not None and loop.status.interval is not None
        step, status = loop.step, loop.status
        try:
            while not self._stop.is_set():
                try:
                    result = await asyncio.to_thread(step) if not inspect.iscoroutinefunction(step) else await step()
                    if inspect.isawaitable(result):
                        await result
                    status.iterations += 1
                    status.consecutive_failures = 0
                    status.last_ok = time.time()
                except Exception as exc:
                    status.consecutive_failures += 1
                    status.last_error = type(exc).__name__
                    log.warning("background loop %s failed (%d in a row): %s: %s", status.name,
                                status.consecutive_failures, type(exc).__name__, exc)
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=status.interval)
                except TimeoutError:
                    pass
        finally:
            status.finished = True

    async def _task(self, loop: _Loop) -> None:
        assert self._stop is not None and loop.run is not None
        try:
            await loop.run(self._stop)
        except Exception as exc:
            loop.status.last_error = type(exc).__name__
            log.error("background loop %s crashed: %s: %s", loop.status.name, type(exc).__name__, exc)
        finally:
            loop.status.finished = True

    def statuses(self) -> list[LoopStatus]:
        return [loop.status for loop in self._loops.values()]

    def problems(self) -> list[str]:
        """Why the loops are not healthy (empty when they are)."""
        out = []
        for s in self.statuses():
            if not s.started:
                out.append(f"{s.name}: not started")
            elif s.finished and not (self._stop is not None and self._stop.is_set()):
                out.append(f"{s.name}: stopped" + (f" ({s.last_error})" if s.last_error else ""))
            elif s.consecutive_failures >= LOOP_MAX_FAILURES:
                out.append(f"{s.name}: failing ({s.last_error}, {s.consecutive_failures} in a row)")
        return out


# -- request size limit ----------------------------------------------------------------


MIN_BLOCK_HEADER = b"x-twinledger-min-block"


class MinBlockConsistency:
    """Read your writes (DESIGN §6): a request carrying `X-TwinLedger-Min-Block: N` is
    answered only once this node's indexer has processed block N (503 `indexer_unavailable`
    if it does not within the node's index wait). Clients send the chain head they saw
    (e.g. after a transaction, or at the start of a sync pass) so the catalog they read
    is at least as new as the chain they checked. Not part of the signed request: dropping
    it only makes an answer possibly staler, never wrong."""

    def __init__(self, app: ASGIApp, node: Any) -> None:
        self.app = app
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = next((v for k, v in scope.get("headers", ()) if k == MIN_BLOCK_HEADER), None)
            if raw is not None:
                if not raw.isdigit() or len(raw) > 18:
                    await problem_response(400, {"error": "bad_request",
                                                 "detail": "X-TwinLedger-Min-Block must be a block number"})(
                        scope, receive, send)
                    return
                if getattr(self.node, "indexer", None) is not None:
                    try:
                        await asyncio.to_thread(self.node.wait_indexed, int(raw))
                    except Exception as exc:  # IndexerError (timeout) or the chain being unreachable
                        status, body = 503, {"error": "indexer_unavailable",
                                             "detail": f"block {int(raw)} is not indexed yet: {exc}"}
                        await problem_response(status, body, {"Retry-After": "1"})(scope, receive, send)
                        return
        await self.app(scope, receive, send)


class BodySizeLimit:
    """413 for bodies over `max_bytes`: at once from Content-Length, else while streaming
    (raised from receive(), so neither FastAPI nor a streaming route reads past it)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                if not value.isdigit():
                    await problem_response(400, {"error": "bad_request", "detail": "invalid Content-Length"})(
                        scope, receive, send)
                    return
                if int(value) > self.max_bytes:
                    await problem_response(413, {"error": "payload_too_large", "detail": self._detail()})(
                        scope, receive, send)
                    return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise StarletteHTTPException(413, self._detail())
            return message

        await self.app(scope, limited, send)

    def _detail(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes"


# -- node context and factory ------------------------------------------------------------


# The node object lives in api/node.py (no FastAPI there, so use cases can import it);
# NodeContext is its historical name here.
NodeContext = Node

LoopFactory = Callable[[NodeContext], None]

# Loops every node runs: nonce pruning, the event indexer, audit anchoring.
LOOP_FACTORIES: tuple[LoopFactory, ...] = (
    lambda node: node.loops.add("nonce-pruning", node.authenticator.prune_nonces,
                                interval=max(60.0, float(node.settings.request_max_age))),
    indexer_loop,
    anchoring_loop,
)

EXTENSION_GROUP = "twinledger.node_extensions"
Extension = Any  # an object with install(app, node), or a callable (app, node) -> None


def load_extensions() -> list[Extension]:
    """The installed node extensions (entry points of group twinledger.node_extensions),
    in name order; each resolves to an object with `install(app, node)` or a callable."""
    eps = sorted(importlib.metadata.entry_points(group=EXTENSION_GROUP), key=lambda ep: ep.name)
    return [ep.load() for ep in eps]


def _install(extension: Extension, app: FastAPI, node: Node) -> None:
    install = getattr(extension, "install", None)
    if callable(install):
        install(app, node)
    elif callable(extension):
        extension(app, node)
    else:
        raise ConfigError(f"node extension {extension!r} has no install(app, node)")


def create_app(
    settings: NodeSettings | None = None,
    *,
    keys: OrgKeys | None = None,
    ledger: LedgerClient | None = None,
    org_directory: OrgDirectory | None = None,
    engine: Engine | None = None,
    blockstore: BlockStore | None = None,
    clock: Callable[[], float] = time.time,
    loop_factories: Sequence[LoopFactory] | None = None,
    extra_ready_checks: dict[str, ReadyCheck] | None = None,
    indexer: Indexer | None = None,
    extensions: Sequence[Extension] | None = None,
    loop_lock: Path | None = None,
) -> FastAPI:
    """Build the node's FastAPI app. Anything not injected is built from `settings`
    (themselves from the environment when None). Raises ConfigError/KeystoreError/
    DeploymentError with a clear message when the node cannot be assembled.

    `extensions` (default: the installed twinledger.node_extensions entry points) are
    installed last with `install(app, node)`: they may add routers and loops.

    `loop_lock`: one of several processes serving this node's database — run the
    background loops only while holding an exclusive lock on this file (see above)."""
    settings = settings if settings is not None else load_settings()
    if keys is None:
        keys = load_org_keys(settings.home, settings.org_dir.name, settings.read_passphrase())
    if ledger is None:
        deployment = Deployment.load(settings.manifest)  # type: ignore[arg-type]
        ledger = LedgerClient(node_web3(settings.rpc_url), deployment, keys.account)
    if engine is None:
        url = settings.database_url
        if url is None:
            raise ConfigError("no database_url (set TWINLEDGER_DATABASE_URL or TWINLEDGER_ORG)")
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = make_engine(url)
    if blockstore is None:
        # verify_writes=False: the node's store only receives blocks from its own Vault.seal,
        # whose importer has just hashed them; every read is verified against its CID anyway.
        blockstore = (KuboClient(settings.kubo_url) if settings.store == "kubo"
                      else FilesystemBlockstore(settings.blocks_dir, verify_writes=False))  # type: ignore[arg-type]
    SQLModel.metadata.create_all(engine)
    domain = Eip712Domain.from_deployment(ledger.deployment)
    directory = org_directory if org_directory is not None else LedgerOrgDirectory(ledger)
    authenticator = RequestAuthenticator(domain, NonceStore(engine), directory, clock=clock,
                                         max_window=settings.request_max_age)
    node = Node(
        settings=settings, keys=keys, deployment=ledger.deployment, domain=domain, ledger=ledger, engine=engine,
        org_directory=directory, authenticator=authenticator, blockstore=blockstore,
        vault=Vault(blockstore, keys.identity), loops=BackgroundLoops(), metrics=Metrics(), clock=clock,
        reason_code=reason_code,
    )
    attach_ledger_services(node, indexer=indexer)
    node.ready_checks.update(_default_ready_checks(node))
    node.ready_checks.update(extra_ready_checks or {})
    for factory in LOOP_FACTORIES if loop_factories is None else loop_factories:
        factory(node)

    # Imported here, not at module level: routers import api.deps, which imports this module.
    from api.routers import api_router

    app = FastAPI(title=f"TwinLedger node ({keys.name})", version="1", lifespan=_lifespan)
    app.state.node = node
    app.state.loop_leadership = LoopLeadership(loop_lock) if loop_lock is not None else None
    register_exception_handlers(app)
    app.include_router(api_router)
    app.add_middleware(MinBlockConsistency, node=node)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(MetricsMiddleware, metrics=node.metrics)  # outermost: counts 413s too
    for extension in load_extensions() if extensions is None else extensions:
        _install(extension, app, node)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI):
    node: NodeContext = app.state.node
    leadership: LoopLeadership | None = app.state.loop_leadership
    standby: asyncio.Task | None = None
    if leadership is None or leadership.try_acquire():
        await node.loops.start()
    else:
        _enter_standby(node, leadership)  # before the first request: waits must not sync
        standby = asyncio.create_task(_stand_by(node, leadership), name="twinledger-loops-standby")
    log.info("node %s (%s) started on chain %s", node.keys.name, node.address, node.deployment.chain_id)
    try:
        yield
    finally:
        if standby is not None:
            standby.cancel()
            await asyncio.gather(standby, return_exceptions=True)
        unfinished = await node.loops.stop()
        if leadership is not None and not unfinished:
            # A step still running in a thread keeps the lock until the process exits, so
            # no successor's anchorer ever overlaps it.
            leadership.release()
        close_node(node)


def close_node(node: NodeContext) -> None:
    """Release what a built node holds (block store client, database connections)."""
    close = getattr(node.blockstore, "close", None)
    if callable(close):
        close()
    node.engine.dispose()


def _enter_standby(node: NodeContext, leadership: LoopLeadership) -> None:
    holder = leadership.holder()
    node.loops.standby = f"standby: loops run in worker pid {holder if holder is not None else '?'}"
    if node.indexer is not None:
        node.indexer.follower = True


async def _stand_by(node: NodeContext, leadership: LoopLeadership) -> None:
    """Retry the loop lock until it is free (its holder ended), then run the loops here."""
    while True:
        await asyncio.sleep(STANDBY_RETRY_SECONDS)
        try:
            if leadership.try_acquire():
                break
        except OSError as exc:  # e.g. the org directory briefly unwritable: keep trying
            log.warning("cannot try the loop lock %s: %s", leadership.path, exc)
            continue
        _enter_standby(node, leadership)  # the holder may have changed
    if node.indexer is not None:
        node.indexer.follower = False
    node.loops.standby = None
    await node.loops.start()
    log.warning("worker %d took over the background loops of node %s", os.getpid(), node.keys.name)


def _default_ready_checks(node: NodeContext) -> dict[str, ReadyCheck]:
    # A separate short-timeout provider to the ledger's endpoint: readiness must answer
    # fast when the chain is down (the ledger client retries with backoff).
    url = getattr(node.ledger.w3.provider, "endpoint_uri", None) or node.settings.rpc_url
    health_w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": HEALTH_RPC_TIMEOUT}))

    def chain() -> None:
        try:
            deployment_mod.check(health_w3, node.deployment)
        except DeploymentError as exc:
            raise RuntimeError(f"manifest does not match the chain: {exc}") from None
        except Exception as exc:
            raise RuntimeError(f"chain unreachable ({type(exc).__name__})") from None

    def database() -> None:
        try:
            with node.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            raise RuntimeError(f"database unavailable ({type(exc).__name__})") from None

    def loops() -> str | None:
        if node.loops.standby is not None and not node.loops.started:
            return node.loops.standby
        problems = node.loops.problems()
        if problems:
            raise RuntimeError("; ".join(problems))
        return None

    return {"chain": chain, "database": database, "loops": loops}


__all__ = ["BackgroundLoops", "BodySizeLimit", "EXTENSION_GROUP", "LOOP_FACTORIES", "LoopStatus", "Node", "NodeContext",
           "STANDBY_RETRY_SECONDS", "close_node", "create_app", "load_extensions"]
