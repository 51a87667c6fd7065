"""The twin sync service against REAL processes (tests/e2e/cluster.py): a devnet and two
`twinledger serve` nodes — "owner" publishes and grants SYNC, "consumer" runs
`twinledger sync` (a real process, killed with SIGKILL where the crash tests say) or
SyncService in this process over the SDK.

The tests run in file order on one cluster and one sync directory (like a consumer's
twin directory over weeks): v1, v2 → crash after fetch (v3) → crash after commit (v4) →
a second asset followed continuously, revoked, purged → expiry of the first asset.

Key releases per version are counted in the OWNER's audit log (`key_released` records):
1 per version normally; 2 for the version whose process was killed after the key release
and before the commit rename (at most once more per kill); 0 after the grant ended (the
service checks the chain before asking)."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from ledger.anvil import free_port
from services.sync import SyncBusyError, SyncService
from services.sync._checkpoint import decode_state
from tests.e2e.cluster import TWINLEDGER, Cluster

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("sync")]

PURPOSE = "twin sync"
NAME = "spindle-twin.bin"
WAIT = 90.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("sync-cluster"), ("owner", "consumer"), anchor_every_seconds=600) as running:
        yield running


@pytest.fixture(scope="module")
def owner(cluster):
    with cluster.client("owner") as client:
        yield client


@pytest.fixture(scope="module")
def consumer(cluster):
    with cluster.client("consumer") as client:
        yield client


@pytest.fixture(scope="module")
def into(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("twins")


@pytest.fixture(scope="module")
def payloads(tmp_path_factory) -> dict[int, Path]:
    """Version contents of the first asset (v3 spans several blocks and STREAM chunks)."""
    root = tmp_path_factory.mktemp("payloads")
    sizes = {1: 300_000, 2: 1, 3: 2_500_000, 4: 70_000, 5: 10, 6: 20}
    out = {}
    for version, size in sizes.items():
        out[version] = root / f"v{version}" / NAME
        out[version].parent.mkdir()
        out[version].write_bytes(os.urandom(size))
    return out


@pytest.fixture(scope="module")
def twin(owner, cluster, payloads) -> int:
    """The first asset: v1 published, SYNC granted to the consumer for an hour."""
    pub = owner.publish(payloads[1], name=NAME, kind="model")
    owner.grant(pub.asset_id, "consumer", ["SYNC"], ttl_seconds=3600, purpose=PURPOSE)
    return pub.asset_id


@pytest.fixture(scope="module")
def line(owner, tmp_path_factory) -> tuple[int, bytes]:
    """The second asset (READ+SYNC for a day): its name is no safe file name → "content"."""
    path = tmp_path_factory.mktemp("line") / "line.csv"
    path.write_bytes(b"t,rpm\n0,1200\n")
    pub = owner.publish(path, name="line/../3 data", kind="dataset")
    owner.grant(pub.asset_id, "consumer", ["READ", "SYNC"], ttl_seconds=86400, purpose="line sync")
    return pub.asset_id, path.read_bytes()


# -- helpers ------------------------------------------------------------------------------------


def released(owner, asset_id: int, kind: str = "key_released") -> Counter:
    """{version: number of audit records of `kind`} in the owner's log for the asset."""
    items = owner.audit_records(kind=kind, asset=asset_id, limit=1000)["items"]
    return Counter(item["version"] for item in items)


def sync_cli(cluster, into: Path, *args: str, check: bool = True) -> tuple[subprocess.CompletedProcess, list[dict]]:
    proc = cluster.cli("sync", "--org", "consumer", "--into", str(into), "--once", "--json", *args, check=check)
    return proc, [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def of(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["event"] == kind]


def current(into: Path, asset_id: int) -> str:
    return os.readlink(into / str(asset_id) / "current")


def entries(root: Path) -> set[str]:
    """Every path under root (dot entries included), relative."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def state(into: Path):
    return decode_state((into / ".twinledger-sync" / "state.json").read_bytes())


def start_sync(cluster, into: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([*TWINLEDGER, "sync", "--org", "consumer", "--into", str(into), *args],
                            env={**cluster.env, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)


def wait_for(condition, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"sync exited {proc.returncode} before {what}:\n{proc.stderr.read()}")
        if time.monotonic() > deadline:
            kill(proc)
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


# -- the tests, in order --------------------------------------------------------------------------


def test_once_materialises_each_version_and_moves_current(cluster, owner, consumer, into, payloads, twin):
    _, events = sync_cli(cluster, into)
    [first] = of(events, "materialised")
    assert (first["asset_id"], first["version"]) == (twin, 1)
    target = into / str(twin) / "1" / NAME
    assert first["path"] == str(target) and target.read_bytes() == payloads[1].read_bytes()
    assert current(into, twin) == "1" and (into / str(twin) / "current" / NAME).read_bytes() == payloads[1].read_bytes()
    record = consumer.version(twin, 1)
    assert first["timestamp"] == record.timestamp and first["cid"] == record.cid
    assert first["lag_seconds"] == pytest.approx(first["materialised_at"] - record.timestamp, abs=0.01)
    assert of(events, "pass") == [{"event": "pass", "materialised": 1, "stopped": 0, "purged": 0, "errors": 0,
                                   "following": [twin]}]

    owner.publish(payloads[2], asset_id=twin)
    _, events = sync_cli(cluster, into)
    assert [(e["asset_id"], e["version"]) for e in of(events, "materialised")] == [(twin, 2)]
    assert current(into, twin) == "2"
    assert (into / str(twin) / "2" / NAME).read_bytes() == payloads[2].read_bytes()
    assert (into / str(twin) / "1" / NAME).read_bytes() == payloads[1].read_bytes()

    _, events = sync_cli(cluster, into)  # nothing new: nothing asked for again
    assert of(events, "materialised") == []
    assert released(owner, twin) == Counter({1: 1, 2: 1})
    recorded = consumer.audit_records(kind="consumption_recorded", asset=twin)["items"]
    assert sorted(r["version"] for r in recorded) == [1, 2]
    saved = state(into)
    assert saved.org == cluster.nodes["consumer"].address
    assert saved.assets[twin].status == "following" and saved.assets[twin].purpose == PURPOSE
    assert {v: e.cid for v, e in saved.assets[twin].versions.items()} == {1: record.cid,
                                                                          2: consumer.version(twin, 2).cid}
    assert entries(into / str(twin)) == {"1", f"1/{NAME}", "2", f"2/{NAME}", "current"}


def test_killed_after_the_fetch_resumes_without_duplicates_or_partial_files(cluster, owner, into, payloads, twin):
    owner.publish(payloads[3], asset_id=twin)
    adir = into / str(twin)
    proc = start_sync(cluster, into, "--once", env={"TWINLEDGER_SYNC_TEST_PAUSE": "after_fetch=300"})
    wait_for(lambda: any(adir.glob(f".tmp-3-*/{NAME}")), proc, "version 3 in its staging dir")
    kill(proc)
    # killed mid-version: the key was released, the plaintext sits in staging, nothing committed
    assert released(owner, twin)[3] == 1
    assert not (adir / "3").exists() and current(into, twin) == "2"
    assert [p.name for p in adir.iterdir() if p.name.startswith(".tmp-")]
    assert 3 not in state(into).assets[twin].versions

    _, events = sync_cli(cluster, into)
    assert [(e["asset_id"], e["version"]) for e in of(events, "materialised")] == [(twin, 3)]
    assert entries(adir) == {"1", f"1/{NAME}", "2", f"2/{NAME}", "3", f"3/{NAME}", "current"}  # no .tmp-*, no .part
    assert current(into, twin) == "3"
    for version in (1, 2, 3):
        assert (adir / str(version) / NAME).read_bytes() == payloads[version].read_bytes()
    assert released(owner, twin) == Counter({1: 1, 2: 1, 3: 2})  # v3 once more, the others never again
    assert sorted(state(into).assets[twin].versions) == [1, 2, 3]


def test_killed_after_the_commit_resumes_without_fetching_again(cluster, owner, into, payloads, twin):
    owner.publish(payloads[4], asset_id=twin)
    adir = into / str(twin)
    proc = start_sync(cluster, into, "--once", env={"TWINLEDGER_SYNC_TEST_PAUSE": "after_commit=300"})
    wait_for(lambda: (adir / "4").is_dir(), proc, "version 4 committed")
    kill(proc)
    # committed but neither `current` nor the checkpoint moved yet
    assert current(into, twin) == "3" and 4 not in state(into).assets[twin].versions

    _, events = sync_cli(cluster, into)
    assert of(events, "materialised") == [] and of(events, "errors") == []
    assert current(into, twin) == "4"
    assert (adir / "current" / NAME).read_bytes() == payloads[4].read_bytes()
    saved = state(into).assets[twin].versions
    assert sorted(saved) == [1, 2, 3, 4] and saved[4].size == payloads[4].stat().st_size  # adopted from disk
    assert released(owner, twin) == Counter({1: 1, 2: 1, 3: 2, 4: 1})
    assert not [p for p in adir.iterdir() if p.name.startswith(".")]


def test_follows_continuously_reports_lag_metrics_and_stops_on_sigterm(cluster, owner, into, payloads, twin, line):
    line_id, content = line
    owner.publish(payloads[5], asset_id=twin)  # pending on the first asset, outside --asset

    port = free_port()
    proc = start_sync(cluster, into, "--asset", str(line_id), "--interval", "0.3", "--metrics-port", str(port),
                      "--json")
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        event = json.loads(lines.get(timeout=WAIT))
        assert (event["event"], event["asset_id"], event["version"]) == ("materialised", line_id, 1)
        assert (into / str(line_id) / "1" / "content").read_bytes() == content
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        samples = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line and not line.startswith("#"))
        assert float(samples["twinledger_sync_lag_seconds_count"]) == 1
        assert float(samples["twinledger_sync_lag_seconds_sum"]) == pytest.approx(max(0.0, event["lag_seconds"]),
                                                                                  abs=0.01)
        assert float(samples["twinledger_sync_versions_materialised_total"]) == 1
        assert float(samples["twinledger_sync_bytes_materialised_total"]) == len(content)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=WAIT) == 0
    assert not (into / str(twin) / "5").exists()  # --asset: the other asset was left alone


def test_revocation_stops_following_and_purge_deletes_the_copies(cluster, owner, consumer, into, twin, line):
    line, _ = line
    owner.revoke(line, "consumer")
    events: list = []
    with SyncService(consumer, into, on_event=events.append) as sync:
        report = sync.run_once()
        with pytest.raises(SyncBusyError):  # one sync process per directory (the lock is held until close)
            SyncService(consumer, into).run_once()
        assert [(s.asset_id, s.reason) for s in report.stopped] == [(line, "revoked")]
        assert [(m.asset_id, m.version) for m in report.materialised] == [(twin, 5)]  # the other asset goes on
        assert events == [*report.materialised, *report.stopped]  # as they happened: assets in id order
        assert report.following == [twin] and report.errors == []
        again = sync.run_once()  # reported once
        assert again.stopped == [] and again.materialised == []
    assert (into / str(line) / "1" / "content").exists()  # no purge asked: the copies stay
    assert released(owner, line) == Counter({1: 1})
    assert released(owner, line, "key_denied") == Counter()  # the chain said no before any key request

    _, cli_events = sync_cli(cluster, into, "--purge-on-revoke")
    assert [(e["asset_id"], e["versions"]) for e in of(cli_events, "purged")] == [(line, [1])]
    assert not (into / str(line)).exists()
    saved = state(into).assets[line]
    assert (saved.status, saved.reason, saved.versions) == ("stopped", "revoked", {})


def test_expiry_stops_following(cluster, owner, consumer, into, payloads, twin):
    owner.publish(payloads[6], asset_id=twin)
    before = released(owner, twin)
    for method, params in (("evm_increaseTime", [7200]), ("evm_mine", [])):
        answer = httpx.post(cluster.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        assert "error" not in answer.json()
    registry = CollectorRegistry()
    with SyncService(consumer, into, purge_on_revoke=True, registry=registry) as sync:
        report = sync.run_once()
    assert [(s.asset_id, s.reason) for s in report.stopped] == [(twin, "expired")]
    assert [(p.asset_id, p.versions) for p in report.purged] == [(twin, (1, 2, 3, 4, 5))]
    assert report.materialised == [] and report.following == [] and report.errors == []
    assert not (into / str(twin)).exists()
    assert released(owner, twin) == before and 6 not in before  # v6 was never asked for
    assert registry.get_sample_value("twinledger_sync_assets_stopped_total", {"reason": "expired"}) == 1
    assert registry.get_sample_value("twinledger_sync_assets_following") == 0


def test_unusable_directory_is_one_error_line(cluster, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    proc, _ = sync_cli(cluster, not_a_dir, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: {not_a_dir} exists and is not a directory"]
