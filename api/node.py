"""The organisation node as one object: everything the use cases and routes work with.

    node = build_node(settings, keys=keys, ledger=ledger, engine=engine, blockstore=store)
    node.indexer.wait_until_indexed(block)       # read your own writes
    node.audit.append(AuditKind.KEY_RELEASED, …)  # committed before the answer
    node.anchorer.anchor_pending()                # Merkle roots on chain

`Node` holds the settings, the org's keys, the LedgerClient (sending as the org), the
event indexer and its queries over the node database, the audit log and its anchorer
(sink = the AuditAnchors contract through the same LedgerClient), the block store and
the vault facade with the org's age identity. It is built once by api.app.create_app and
kept in `app.state.node` (api.app.NodeContext is the same class). Nothing here imports
FastAPI, so the use cases (api/usecases/) run without an HTTP layer.

Building a Node does not call the chain (a node starts while the chain is down and says
so in /readyz); it creates the node's tables in the database.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from api.auth import Eip712Domain, OrgDirectory, RequestAuthenticator
from api.keystore import OrgKeys
from api.settings import NodeSettings
from ledger.audit import Anchorer, AuditLog
from ledger.audit.chain import ChainAnchors
from ledger.client import LedgerClient
from ledger.deployment import Deployment
from ledger.indexer import Indexer, IndexQueries
from vault.blockstore import BlockStore
from vault.vault import Vault

if TYPE_CHECKING:  # api.app imports FastAPI; the use cases must not
    from api.app import BackgroundLoops
    from api.routers.health import Metrics, ReadyCheck

INDEXER_POLL_SECONDS = 0.25  # how often the indexer loop asks the chain for new blocks
INDEX_WAIT_SECONDS = 30.0  # how long a write waits for its block to be indexed


def _default_reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or type(exc).__name__)


@dataclass
class Node:
    """Everything a request handler or use case may need, built once per app."""

    settings: NodeSettings
    keys: OrgKeys
    deployment: Deployment
    domain: Eip712Domain
    ledger: LedgerClient
    engine: Engine
    org_directory: OrgDirectory
    authenticator: RequestAuthenticator
    blockstore: BlockStore
    vault: Vault
    loops: "BackgroundLoops"
    metrics: "Metrics"
    indexer: Indexer | None = None
    queries: IndexQueries | None = None
    audit: AuditLog | None = None
    anchorer: Anchorer | None = None
    clock: Callable[[], float] = time.time
    # The machine code of an exception, as the HTTP layer reports it (create_app injects
    # api.http_errors.reason_code); audit denial records carry the same code.
    reason_code: Callable[[BaseException], str] = _default_reason
    index_wait_seconds: float = INDEX_WAIT_SECONDS
    ready_checks: dict[str, "ReadyCheck"] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)  # extensions park their singletons here

    @property
    def address(self) -> str:
        """This node's org address."""
        return self.keys.address

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def wait_indexed(self, block: int) -> None:
        """Return once the indexer has processed `block` (IndexerError after the timeout)."""
        assert self.indexer is not None
        self.indexer.wait_until_indexed(block, timeout=self.index_wait_seconds)


def attach_ledger_services(node: Node, *, indexer: Indexer | None = None) -> Node:
    """Give `node` its indexer, index queries, audit log and anchorer over its database."""
    node.indexer = indexer if indexer is not None else Indexer(node.ledger.w3, node.deployment, node.engine)
    node.indexer.create_tables()  # database only; checks the DB belongs to this deployment
    node.queries = IndexQueries(node.engine)
    node.audit = AuditLog(node.engine, node.address, clock=node.now_ms)
    settings = node.settings
    node.anchorer = Anchorer(node.audit, ChainAnchors(node.ledger), every_records=settings.anchor_every_records,
                             every_seconds=settings.anchor_every_seconds)
    return node


# -- background loops ------------------------------------------------------------------


def threaded_task(run: Callable[[threading.Event], None]) -> Callable[[asyncio.Event], Any]:
    """Adapt a blocking `run(stop: threading.Event)` loop (Indexer.run) to
    BackgroundLoops.add_task: it runs in a worker thread, stops when the app stops, and
    an exception it raises ends the task (reported by /readyz)."""

    async def task(stop: asyncio.Event) -> None:
        flag = threading.Event()
        worker = asyncio.ensure_future(asyncio.to_thread(run, flag))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({worker, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            flag.set()
            stopper.cancel()
        await worker

    return task


def indexer_loop(node: Node) -> None:
    """LOOP_FACTORIES entry: the event indexer follows the chain."""
    assert node.indexer is not None
    indexer = node.indexer
    node.loops.add_task("indexer", threaded_task(lambda stop: indexer.run(stop, poll_interval=INDEXER_POLL_SECONDS)))


def anchoring_loop(node: Node) -> None:
    """LOOP_FACTORIES entry: anchor the audit log every anchor_every_records records or
    anchor_every_seconds seconds. A batch whose transaction failed stays pending, is
    retried on the next step, and counts as a failed step (reported by /readyz)."""
    assert node.anchorer is not None
    anchorer = node.anchorer

    def step() -> None:
        if not anchorer.due():
            return
        stuck = [b for b in anchorer.anchor_pending() if not b.anchored]
        if stuck:
            b = stuck[0]
            raise RuntimeError(f"audit batch {b.from_seq}..{b.to_seq} not anchored yet: {b.last_error}")

    node.loops.add("audit-anchoring", step, interval=min(1.0, float(node.settings.anchor_every_seconds)))


__all__ = ["INDEXER_POLL_SECONDS", "Node", "anchoring_loop", "attach_ledger_services", "indexer_loop",
           "threaded_task"]
