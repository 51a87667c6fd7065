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

`ChainReads` (node.chain_reads) is how key release reads the chain: `latest()` gives a
`BlockView` — every read through it answers for ONE block, the chain's latest block as
returned by an eth_getBlockByNumber that was SENT AFTER `latest()` was called (concurrent
callers share such a request; one that was already in flight when a caller arrived is
never used for that caller). Reads are pinned to that block's hash and memoised per block
hash (the state of a block never changes), so concurrent releases in the same block share
them, and a new block — e.g. the one with a revoke — is always read afresh. Bounded: the
views of the last `MAX_BLOCKS` blocks, `MAX_ENTRIES` reads each.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from web3 import Web3

from api.auth import Eip712Domain, OrgDirectory, RequestAuthenticator
from api.errors import UnknownOrgError
from api.keystore import OrgKeys
from api.settings import NodeSettings
from ledger.audit import Anchorer, AuditLog
from ledger.audit.chain import ChainAnchors
from ledger.client import BlockRef, LedgerClient
from ledger.deployment import Deployment
from ledger.errors import ContractRevertError
from ledger.models import AssetState, OrgInfo, Permission
from ledger.indexer import Indexer, IndexQueries
from vault.blockstore import BlockStore
from vault.vault import Vault

if TYPE_CHECKING:  # api.app imports FastAPI; the use cases must not
    from api.app import BackgroundLoops
    from api.routers.health import Metrics, ReadyCheck

INDEXER_POLL_SECONDS = 0.25  # how often the indexer loop asks the chain for new blocks
INDEX_WAIT_SECONDS = 30.0  # how long a write waits for its block to be indexed


def node_web3(rpc_url: str, *, timeout: float = 30.0) -> Web3:
    """The node's Web3 over HTTP, without web3's default `validation` middleware: that one
    sends an extra eth_chainId before every eth_call/transaction (it doubled the cost of a
    view call). The chain id is the deployment manifest's, checked by /readyz
    (ledger.deployment.check); transactions are signed locally (ledger.tx) for the chain id
    the node reports."""
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
    w3.middleware_onion.remove("validation")
    return w3


def _default_reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or type(exc).__name__)


# -- chain reads pinned to the latest block ----------------------------------------------

MAX_BLOCKS = 4  # block views kept (a release in flight may still use the previous block)
MAX_ENTRIES = 10_000  # memoised reads per block; past this a view still reads, just does not keep


class BlockView:
    """Reads at one block (`block`), memoised. Implements OrgDirectory for that block:
    registered/active/recipient all come from one getOrg (which carries `active`)."""

    def __init__(self, ledger: LedgerClient, block: BlockRef) -> None:
        self.ledger = ledger
        self.block = block
        self._memo: dict[tuple[Any, ...], Future] = {}
        self._lock = threading.Lock()

    def _memoised(self, key: tuple[Any, ...], read: Callable[[], Any]) -> Any:
        """read() once per key; concurrent callers of a key being read wait for that read.
        A failed read is not kept: each waiter then reads for itself (so no exception
        object is shared between requests — the release use case annotates its errors)."""
        with self._lock:
            future = self._memo.get(key)
            mine = future is None
            if mine:
                future = Future()
                if len(self._memo) < MAX_ENTRIES:
                    self._memo[key] = future
        if not mine:
            try:
                return future.result()
            except Exception:
                return read()
        try:
            value = read()
        except BaseException as exc:
            with self._lock:
                if self._memo.get(key) is future:
                    del self._memo[key]
            future.set_exception(exc)
            raise
        future.set_result(value)
        return value

    def org(self, address: str) -> OrgInfo | None:
        """The org's record at this block; None if it is not registered."""
        def read() -> OrgInfo | None:
            try:
                return self.ledger.get_org(address, block_identifier=self.block)
            except ContractRevertError as exc:
                if exc.name == "ConsortiumOrgNotRegistered":
                    return None
                raise
        return self._memoised(("getOrg", address), read)

    def is_active(self, address: str) -> bool:
        info = self.org(address)
        return info is not None and bool(info.active)

    def is_registered(self, address: str) -> bool:
        return self.org(address) is not None

    def recipient_of(self, address: str) -> str:
        info = self.org(address)
        if info is None:
            raise UnknownOrgError(f"{address} is not a registered organisation")
        return info.age_recipient

    def asset(self, asset_id: int) -> AssetState:
        """getAsset at this block (a revert, e.g. AssetLedgerUnknownAsset, is raised, not kept)."""
        return self._memoised(("getAsset", asset_id),
                              lambda: self.ledger.get_asset(asset_id, block_identifier=self.block))

    def has_access_for(self, asset_id: int, org: str, permission: Permission, purpose: str) -> bool:
        return self._memoised(("hasAccessFor", asset_id, org, int(permission), purpose),
                              lambda: bool(self.ledger.has_access_for(asset_id, org, permission, purpose,
                                                                      block_identifier=self.block)))


class ImmutableCache:
    """A bounded, thread-safe LRU for facts that never change once known (content-addressed
    or append-only), e.g. the CID of a registered version."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


class _FreshValue:
    """`get()` returns the result of a `fetch()` that STARTED after get() was called.
    Concurrent callers share one fetch: while one is in flight, newcomers wait for it to
    end and then share the next one (so at most one fetch runs, and one more is queued)."""

    def __init__(self, fetch: Callable[[], Any]) -> None:
        self._fetch = fetch
        self._cond = threading.Condition()
        self._started = 0  # id of the latest fetch started
        self._done = 0  # id of the latest fetch finished (its value is _value)
        self._busy = False
        self._value: Any = None

    def get(self) -> Any:
        with self._cond:
            need = self._started + 1  # any fetch with this id or later started after now
            while self._done < need:
                if not self._busy:
                    self._started += 1
                    mine = self._started
                    self._busy = True
                    break
                self._cond.wait()
            else:
                return self._value
        try:
            value = self._fetch()
        except BaseException:
            with self._cond:
                self._busy = False
                self._cond.notify_all()  # a waiter starts its own fetch
            raise
        with self._cond:
            self._done, self._value, self._busy = mine, value, False
            self._cond.notify_all()
        return value


class LatestView:
    """The view ONE decision reads through: the block is chosen at the first read (so a
    request refused before any chain read, e.g. for its signature, costs no RPC) and every
    later read of the decision uses that same block. Implements OrgDirectory."""

    def __init__(self, reads: "ChainReads") -> None:
        self._reads = reads
        self._view: BlockView | None = None

    @property
    def view(self) -> BlockView:
        if self._view is None:
            self._view = self._reads.latest()
        return self._view

    @property
    def chosen(self) -> BlockRef | None:
        """The block of this decision, or None if nothing was read yet."""
        return None if self._view is None else self._view.block

    def is_active(self, address: str) -> bool:
        return self.view.is_active(address)

    def is_registered(self, address: str) -> bool:
        return self.view.is_registered(address)

    def recipient_of(self, address: str) -> str:
        return self.view.recipient_of(address)

    def asset(self, asset_id: int) -> AssetState:
        return self.view.asset(asset_id)

    def has_access_for(self, asset_id: int, org: str, permission: Permission, purpose: str) -> bool:
        return self.view.has_access_for(asset_id, org, permission, purpose)


class ChainReads:
    """Block views for key release (see the module docstring for the exact semantics)."""

    def __init__(self, ledger: LedgerClient) -> None:
        self.ledger = ledger
        self._latest = _FreshValue(ledger.latest_block)
        self._views: dict[bytes, BlockView] = {}
        self._lock = threading.Lock()

    def latest(self) -> BlockView:
        """A view of the latest block, as of a request sent after this call."""
        block: BlockRef = self._latest.get()
        with self._lock:
            view = self._views.get(block.hash)
            if view is None:
                view = self._views[block.hash] = BlockView(self.ledger, block)
                while len(self._views) > MAX_BLOCKS:
                    del self._views[next(iter(self._views))]  # oldest first (dicts keep order)
            return view

    def decision(self) -> LatestView:
        """A LatestView: the latest block, chosen at the decision's first chain read."""
        return LatestView(self)


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
    chain_reads: ChainReads | None = None  # key release's block-pinned reads (attach_ledger_services)
    # Key release: (asset, version) → CID, and CID → the file key of that CID's ciphertext
    # (both immutable: versions are append-only, CIDs content-addressed; see
    # api/usecases/release.py _rewrap for why keeping file keys in memory is acceptable).
    version_cids: ImmutableCache = field(default_factory=ImmutableCache)
    file_keys: ImmutableCache = field(default_factory=ImmutableCache)

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
    node.chain_reads = ChainReads(node.ledger)
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


__all__ = ["INDEXER_POLL_SECONDS", "BlockView", "ChainReads", "LatestView", "ImmutableCache", "Node", "node_web3", "anchoring_loop", "attach_ledger_services", "indexer_loop",
           "threaded_task"]
