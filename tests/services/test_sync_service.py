"""SyncService's decisions over an injected fake of the SDK client (the one component it
talks to the outside through): races between the chain check and the key release,
transient failures, index lag, checkpoint recovery and every stop reason. The real
node/chain path is covered by tests/services/test_sync.py; the fake follows the SDK's
contract (get() writes `out` completely or not at all, raises typed api.errors)."""
from __future__ import annotations

import contextlib

import hashlib
import os
from types import SimpleNamespace

import pytest

from api.errors import NodeUnreachableError, RemoteForbiddenError, RemoteNotFoundError
from api.sdk.models import VersionInfo
from ledger.client import LedgerClient
from ledger.models import AssetKind, AssetState, GrantState, OrgInfo, Permission
from services.sync import SyncConfigError, SyncService, SyncStateError
from services.sync._checkpoint import decode_state

ME = "0x" + "11" * 20
OWNER = "0x" + "22" * 20


class FakeLedger:
    def __init__(self) -> None:
        self.time = 1_000_000
        self.counts: dict[int, int] = {}
        self.retired: set[int] = set()
        self.grants: dict[int, GrantState] = {}
        self.inactive: set[str] = set()

    def get_asset(self, asset_id):
        return AssetState(asset_id, OWNER, AssetKind.MODEL, asset_id in self.retired, self.counts[asset_id])

    def get_org(self, address):
        return OrgInfo(address, "org", "age1x", "http://127.0.0.1:1", address not in self.inactive, 1)

    def is_active(self, address):
        return address not in self.inactive

    def get_grant(self, asset_id, grantee):
        return self.grants.get(asset_id, GrantState(Permission(0), 0, b"\0" * 23))

    def chain_time(self):
        return self.time

    def block_number(self):
        return 100 + sum(self.counts.values())  # moves whenever something is published

    def has_access_for(self, asset_id, org, permission, purpose):
        g = self.get_grant(asset_id, org)
        return (asset_id not in self.retired and not self.inactive and g.permissions & permission == permission
                and g.expiry > self.time and g.purpose_hash == LedgerClient.purpose_hash(purpose))


class FakeClient:
    def __init__(self) -> None:
        self.keys = SimpleNamespace(address=ME)
        self.ledger = FakeLedger()
        self.contents: dict[tuple[int, int], bytes] = {}
        self.unindexed: set[tuple[int, int]] = set()
        self.fail_get: dict[tuple[int, int], Exception] = {}
        self.gets: list[tuple[int, int, str]] = []
        self.purposes: dict[int, str] = {}
        self.min_block: int | None = None
        self.reads_at: list[int | None] = []  # the read-your-writes block in effect per catalog read

    @contextlib.contextmanager
    def reading_after(self, block=None):
        previous, self.min_block = self.min_block, block
        try:
            yield self
        finally:
            self.min_block = previous

    def publish(self, asset_id: int, data: bytes, purpose: str = "sync", *, expiry: int | None = None) -> None:
        version = self.ledger.counts.get(asset_id, 0) + 1
        self.ledger.counts[asset_id] = version
        self.contents[(asset_id, version)] = data
        if asset_id not in self.ledger.grants:
            self.grant(asset_id, purpose, expiry=expiry)

    def grant(self, asset_id, purpose="sync", permissions=Permission.SYNC, expiry=None):
        self.purposes[asset_id] = purpose
        self.ledger.grants[asset_id] = GrantState(permissions, expiry or self.ledger.time + 3600,
                                                  LedgerClient.purpose_hash(purpose))

    def grants(self, grantee, permission):
        self.reads_at.append(self.min_block)
        assert (grantee, permission) == (ME, "SYNC")
        return [{"asset_id": a, "purpose": self.purposes[a], "active": bool(g.permissions),
                 "in_force": bool(g.permissions & Permission.SYNC) and g.expiry > self.ledger.time}
                for a, g in self.ledger.grants.items()]

    def asset(self, asset_id):
        return {"asset_id": asset_id, "name": f"asset-{asset_id}.bin"}

    def version(self, asset_id, version):
        self.reads_at.append(self.min_block)
        if (asset_id, version) in self.unindexed:
            raise RemoteNotFoundError("not indexed", status=404, reason="unknown_asset_version")
        return VersionInfo(asset_id, version, f"bafy{asset_id}x{version}", b"\1" * 32,
                           len(self.contents[(asset_id, version)]), (), OWNER, self.ledger.time - 5)

    def get(self, asset_id, version, out, *, permission, purpose):
        assert permission == Permission.SYNC
        self.gets.append((asset_id, version, purpose))
        if (asset_id, version) in self.fail_get:
            raise self.fail_get.pop((asset_id, version))
        data = self.contents[(asset_id, version)]
        out.write_bytes(data)
        return SimpleNamespace(size=len(data), cid=f"bafy{asset_id}x{version}", sha256=hashlib.sha256(data).hexdigest(),
                               key_audit_seq=len(self.gets), consumption_audit_seq=None)


@pytest.fixture
def client():
    return FakeClient()


def files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".twinledger-sync" not in p.parts)


def test_materialises_in_order_with_lag_from_the_registration_block(client, tmp_path):
    client.publish(1, b"v1")
    client.publish(1, b"v2")
    with SyncService(client, tmp_path, clock=lambda: client.ledger.time + 2.5) as sync:
        report = sync.run_once()
    assert [(m.asset_id, m.version, m.lag_seconds) for m in report.materialised] == [(1, 1, 7.5), (1, 2, 7.5)]
    assert client.gets == [(1, 1, "sync"), (1, 2, "sync")]
    assert (tmp_path / "1" / "current" / "asset-1.bin").read_bytes() == b"v2"
    assert files(tmp_path) == ["1", "1/1", "1/1/asset-1.bin", "1/2", "1/2/asset-1.bin", "1/current"]


def test_a_denial_that_ends_the_grant_stops_the_asset_and_leaves_nothing(client, tmp_path):
    client.publish(1, b"v1")
    client.fail_get[(1, 1)] = RemoteForbiddenError("no", status=403, reason="grant_expired", audit_seq=9)
    with SyncService(client, tmp_path) as sync:
        report = sync.run_once()
        assert [(s.asset_id, s.reason) for s in report.stopped] == [(1, "expired")] and report.errors == []
        assert files(tmp_path) == ["1"]  # the staging dir is gone
        assert decode_state((tmp_path / ".twinledger-sync" / "state.json").read_bytes()).assets[1].status == "stopped"
        client.publish(1, b"v2")  # the feed still lists the grant in force: the chain is asked again, says yes
        again = sync.run_once()
    assert [(m.asset_id, m.version) for m in again.materialised] == [(1, 1), (1, 2)]
    assert again.following == [1]


def test_transient_failures_are_reported_and_retried_next_pass(client, tmp_path):
    client.publish(1, b"v1")
    client.publish(1, b"v2")
    client.publish(2, b"other")
    client.fail_get[(1, 1)] = NodeUnreachableError("owner node down")
    client.unindexed.add((2, 1))
    with SyncService(client, tmp_path) as sync:
        report = sync.run_once()
        assert [(e.asset_id, e.version, e.reason) for e in report.errors] == [(1, 1, "node_unreachable")]
        assert report.materialised == [] and not report.ok  # v2 waits for v1; asset 2 waits for the index
        assert files(tmp_path) == ["1"]  # no staging dir left, none made for the unindexed version
        client.unindexed.clear()
        report = sync.run_once()
    assert [(m.asset_id, m.version) for m in report.materialised] == [(1, 1), (1, 2), (2, 1)] and report.ok


@pytest.mark.parametrize("end, reason", [
    (lambda c: c.ledger.retired.add(1), "retired"),
    (lambda c: c.ledger.inactive.add(OWNER), "inactive"),
    (lambda c: c.ledger.grants.__setitem__(1, GrantState(Permission(0), 0, b"\0" * 23)), "revoked"),
    (lambda c: c.grant(1, "sync", Permission.READ), "revoked"),  # SYNC withdrawn
    (lambda c: setattr(c.ledger, "time", c.ledger.time + 7200), "expired"),
])
def test_every_way_a_grant_ends_is_named(client, tmp_path, end, reason):
    client.publish(1, b"v1")
    with SyncService(client, tmp_path, purge_on_revoke=True) as sync:
        assert [m.version for m in sync.run_once().materialised] == [1]
        end(client)
        client.publish(1, b"v2")
        report = sync.run_once()
    assert [(s.asset_id, s.reason) for s in report.stopped] == [(1, reason)]
    assert [(p.asset_id, p.versions) for p in report.purged] == [(1, (1,))]
    assert client.gets == [(1, 1, "sync")] and files(tmp_path) == []


def test_an_asset_asked_for_without_a_grant_is_no_grant_once(client, tmp_path):
    client.publish(1, b"v1")
    client.ledger.counts[5] = 1
    with SyncService(client, tmp_path, assets=[5, 5]) as sync:
        first, second = sync.run_once(), sync.run_once()
    assert [(s.asset_id, s.reason) for s in first.stopped] == [(5, "no_grant")] and second.stopped == []
    assert client.gets == []  # asset 1 is not asked for: not in `assets`


def test_recovery_from_a_lost_checkpoint_and_a_half_done_pass(client, tmp_path):
    client.publish(1, b"v1")
    client.publish(1, b"v2")
    with SyncService(client, tmp_path) as sync:
        sync.run_once()
    meta = tmp_path / ".twinledger-sync"
    (meta / "state.json").write_bytes(b"{not json")
    os.symlink("1", tmp_path / "1" / ".current-x")  # a pointer switch cut short
    os.replace(tmp_path / "1" / ".current-x", tmp_path / "1" / "current")
    (tmp_path / "1" / ".tmp-3-abc").mkdir()
    with SyncService(client, tmp_path) as sync:
        assert sync.run_once().materialised == []
        assert os.readlink(tmp_path / "1" / "current") == "2"  # re-pointed at the newest version on disk
        client.publish(1, b"v3")
        report = sync.run_once()
    assert [m.version for m in report.materialised] == [3]  # 1 and 2 adopted from disk, not fetched again
    assert [g[1] for g in client.gets] == [1, 2, 3]
    assert os.readlink(tmp_path / "1" / "current") == "3" and not (tmp_path / "1" / ".tmp-3-abc").exists()
    saved = decode_state((meta / "state.json").read_bytes())
    assert saved.org == ME and sorted(saved.assets[1].versions) == [1, 2, 3]
    assert saved.assets[1].versions[2].size == 2 and saved.assets[1].versions[2].cid is None  # recovered


def test_a_directory_of_another_org_is_refused(client, tmp_path):
    client.publish(1, b"v1")
    with SyncService(client, tmp_path) as sync:
        sync.run_once()
    client.keys.address = "0x" + "33" * 20
    with SyncService(client, tmp_path) as sync, pytest.raises(SyncStateError, match="synced for organisation"):
        sync.run_once()
    with SyncService(client, tmp_path):  # the lock was released with the refusal
        pass


@pytest.mark.parametrize("kwargs", [{"assets": [-1]}, {"assets": ["7"]}, {"assets": [True]},
                                    {"poll_interval": 0}, {"environ": {"TWINLEDGER_SYNC_TEST_PAUSE": "x=1"}}])
def test_bad_arguments_are_refused_at_construction(client, tmp_path, kwargs):
    with pytest.raises(SyncConfigError):
        SyncService(client, tmp_path, **kwargs)


def test_every_catalog_read_waits_for_the_chain_head_seen_at_the_start_of_the_pass(client, tmp_path):
    client.publish(1, b"v1")
    client.publish(1, b"v2")
    head = client.ledger.block_number()
    with SyncService(client, tmp_path / "twins") as sync:
        sync.run_once()
    assert client.reads_at and set(client.reads_at) == {head}
    assert client.min_block is None  # restored after the pass
