"""create_app wiring: the indexer and audit-anchoring background loops (as LOOP_FACTORIES
registers them) and node extensions (install(app, node))."""
from __future__ import annotations

import time

import pytest
from fastapi import APIRouter

from api.app import LOOP_FACTORIES, load_extensions
from api.errors import ConfigError
from api.node import Node
from ledger.client import LedgerClient
from ledger.models import AssetKind
from tests.api.node_fixtures import NodeHarness


def _eventually(check, what: str, timeout: float = 60.0):
    """Poll `check()` until it returns a truthy value (a bound on waiting, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"{what} did not happen within {timeout} s")


def test_background_loops_index_and_anchor(members, w3, deployment, tmp_path):
    alice = members["alice"]
    with NodeHarness.start(alice.account, alice.identity, "alice", w3, deployment, tmp_path,
                           f"sqlite:///{tmp_path / 'node.db'}", loop_factories=LOOP_FACTORIES) as node:
        names = {s.name for s in node.node.loops.statuses()}
        assert {"indexer", "audit-anchoring", "nonce-pruning"} <= names
        # written behind the node's back: only the indexer loop can make it appear
        outside = LedgerClient(w3, deployment, members["bob"].account).create_asset(AssetKind.OTHER, "from bob")
        _eventually(lambda: node.get(f"/v1/assets/{outside.asset_id}").status_code == 200, "indexing")
        # the harness sets anchor_every_seconds=3600 and 10,000 records; lower them on the anchorer
        node.node.anchorer.every_records = 2
        node.post_json("/v1/assets", {"kind": "other", "name": "a"})
        node.post_json("/v1/assets", {"kind": "other", "name": "b"})
        last = node.node.audit.last_seq()
        head = _eventually(lambda: (h := node.get("/v1/audit/head").json())["anchored_seq"] >= last and h,
                           "anchoring")
        assert head["batches"] >= 1
        ready = node.client.get("/readyz").json()
        assert ready["checks"]["loops"] == "ok", ready
    statuses = {s.name: s for s in node.node.loops.statuses()}
    assert statuses["indexer"].finished and statuses["audit-anchoring"].iterations >= 1


def test_extensions_are_installed_with_the_node(members, w3, deployment, tmp_path):
    calls: list[tuple[object, Node]] = []

    class JobsExtension:
        @staticmethod
        def install(app, node: Node) -> None:
            router = APIRouter()

            @router.get("/v1/ext/ping")
            def ping() -> dict:
                return {"org": node.address}

            app.include_router(router)
            calls.append((app, node))

    def plain(app, node: Node) -> None:
        node.extras["plain"] = True

    alice = members["alice"]
    with NodeHarness.start(alice.account, alice.identity, "alice", w3, deployment, tmp_path,
                           f"sqlite:///{tmp_path / 'node.db'}", extensions=[JobsExtension, plain]) as node:
        assert node.client.get("/v1/ext/ping").json() == {"org": alice.address}
        assert calls == [(node.client.app, node.node)] and node.node.extras["plain"] is True
    with pytest.raises(ConfigError):
        with NodeHarness.start(alice.account, alice.identity, "alice", w3, deployment, tmp_path,
                               f"sqlite:///{tmp_path / 'other.db'}", extensions=[object()]):
            pass


def test_installed_extensions_load_from_entry_points():
    for extension in load_extensions():  # whatever the environment has installed
        assert callable(getattr(extension, "install", None)) or callable(extension)


def test_min_block_header_makes_reads_wait_for_the_index(members, w3, deployment, tmp_path):
    """Read your writes (DESIGN §6): X-TwinLedger-Min-Block holds a read until that block
    is indexed; a block the index cannot reach in time is a 503, a malformed one a 400."""
    alice = members["alice"]
    with NodeHarness.start(alice.account, alice.identity, "alice", w3, deployment, tmp_path,
                           f"sqlite:///{tmp_path / 'node.db'}", loop_factories=LOOP_FACTORIES) as node:
        # Written behind the node's back: without the header a read may race the indexer.
        outside = LedgerClient(w3, deployment, members["bob"].account).create_asset(AssetKind.OTHER, "behind")
        answer = node.get(f"/v1/assets/{outside.asset_id}",
                          headers={"X-TwinLedger-Min-Block": str(outside.tx.block_number)})
        assert answer.status_code == 200, answer.text
        node.node.index_wait_seconds = 0.5
        future = node.get("/v1/assets", headers={"X-TwinLedger-Min-Block": str(w3.eth.block_number + 1000)})
        assert future.status_code == 503 and future.json()["error"] == "indexer_unavailable"
        bad = node.get("/v1/assets", headers={"X-TwinLedger-Min-Block": "-1"})
        assert bad.status_code == 400
