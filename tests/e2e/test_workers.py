"""`twinledger serve --workers 2` over real processes, a real Anvil and real HTTP.

One org node ("owner") served by two worker processes; consumers are accounts registered
on chain that sign their key requests here. Every request goes over a NEW connection (no
keep-alive), so the kernel hands requests to either worker; the `X-TwinLedger-Worker`
answer header says which one served it. The tests run in file order on one cluster:
releases through both workers with a gapless, complete audit log; concurrent publishes
and grants (the org account's transaction nonces across processes); /metrics summing both
workers; anchoring exactly once and `audit verify --all`; then the worker running the
background loops is SIGKILLed and the other one must take anchoring over."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from prometheus_client.parser import text_string_to_metric_families

from api.auth.eip712 import Eip712Domain, KeyRequest, new_nonce
from api.leadership import LOCK_FILE
from ledger.audit.chain import ChainAnchors
from ledger.client import LedgerClient
from ledger.deployment import Deployment, dev_account
from ledger.models import Permission
from tests.e2e.cluster import Cluster
from vault.age import X25519Identity

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

WORKERS = 2
WAIT = 60.0  # seconds: anchoring, take-over, both workers seen
PURPOSE = "workers e2e"


class WorkerSpy(httpx.HTTPTransport):
    """The real HTTP transport, one connection per request, noting which worker answered."""

    def __init__(self) -> None:
        super().__init__(limits=httpx.Limits(max_keepalive_connections=0))
        self.seen: list[tuple[str, str, str | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.seen.append((request.method, request.url.path, response.headers.get("x-twinledger-worker")))
        return response


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("workers"), ["owner"], workers=WORKERS, anchor_every_seconds=1.0,
                 cli_setup=False) as running:
        yield running


@pytest.fixture(scope="module")
def node_url(cluster) -> str:
    return cluster.nodes["owner"].url


@pytest.fixture(scope="module")
def owner(cluster):
    client = cluster.client("owner")
    yield client
    client.close()


@pytest.fixture(scope="module")
def consumers(cluster):
    """Two consumer orgs (account, age identity), registered by the devnet admin."""
    admin = LedgerClient.connect(cluster.rpc_url, cluster.root / "devnet" / "deployment.json", dev_account(0))
    made = []
    for i in range(2):
        account, identity = Account.create(), X25519Identity.generate()
        admin.register_org(account.address, f"consumer-{i}", str(identity.recipient), "http://127.0.0.1:9")
        made.append((account, identity))
    return made


@pytest.fixture(scope="module")
def domain(cluster) -> Eip712Domain:
    return Eip712Domain.from_deployment(Deployment.load(cluster.root / "devnet" / "deployment.json"))


@pytest.fixture(scope="module")
def published(owner, consumers, tmp_path_factory):
    path = tmp_path_factory.mktemp("payload") / "model.bin"
    path.write_bytes(os.urandom(64 * 1024))
    pub = owner.publish(path, name="workers model", kind="model")
    for account, _ in consumers:
        owner.grant(pub.asset_id, account.address, [Permission.READ], ttl_seconds=3600, purpose=PURPOSE)
    return pub


def key_body(domain: Eip712Domain, consumer, asset_id: int, version: int) -> bytes:
    account, identity = consumer
    request = KeyRequest(asset=asset_id, version=version, consumer=account.address,
                         recipient=str(identity.recipient), purpose=PURPOSE, permission=int(Permission.READ),
                         nonce=new_nonce(), deadline=int(time.time()) + 240)
    signature = request.sign(domain, account)
    return json.dumps({"request": request.to_json(), "signature": "0x" + signature.hex()}).encode()


def release_keys(url: str, bodies: list[bytes], threads: int = 4) -> list[httpx.Response]:
    """POST /v1/keys for each body, `threads` at a time, each on a fresh connection."""
    def one(body: bytes) -> httpx.Response:
        return httpx.post(f"{url}/v1/keys", content=body, headers={"Content-Type": "application/json"}, timeout=30)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, bodies))


def all_records(client) -> list[dict]:
    out, after = [], None
    while True:
        page = client.audit_records(after_seq=after, limit=1000)
        out.extend(page["items"])
        if page.get("next_after_seq") is None or not page["items"]:
            return out
        after = page["next_after_seq"]


def wait_anchored(client, timeout: float = WAIT) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        head = client.audit_head()
        if head["last_seq"] >= 1 and head["anchored_seq"] >= head["last_seq"]:
            return head
        if time.monotonic() > deadline:
            raise AssertionError(f"audit log not anchored within {timeout}s: {head}")
        time.sleep(0.5)


def metric(url: str, name: str, labels: dict[str, str]) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def loop_holder(cluster) -> int | None:
    text = (cluster.root / "orgs" / "owner" / LOCK_FILE).read_text().strip()
    return int(text) if text.isdigit() else None


def assert_anchored_exactly_once(cluster, owner) -> None:
    """Every batch of the node's database anchored, each by exactly one on-chain event,
    the events covering 1..head without gaps or overlaps."""
    head = wait_anchored(owner)
    with sqlite3.connect(cluster.db_path("owner"), timeout=10) as db:
        batches = db.execute("SELECT from_seq, to_seq, root, status FROM audit_batches ORDER BY from_seq").fetchall()
    chain = ChainAnchors(LedgerClient.connect(cluster.rpc_url, cluster.root / "devnet" / "deployment.json"))
    events = list(chain.events(cluster.nodes["owner"].address))
    assert [(e.from_seq, e.to_seq, e.root) for e in events] == [(f, t, bytes(r)) for f, t, r, _ in batches]
    assert all(status == "anchored" for *_, status in batches), batches
    assert events[0].from_seq == 1 and events[-1].to_seq >= head["last_seq"]
    assert all(b.from_seq == a.to_seq + 1 for a, b in zip(events, events[1:]))
    report = cluster.cli_json("audit", "verify", "--all", "--org", "owner")
    assert report["ok"] and report["complete"], report["problems"]


# -- the tests, in order ----------------------------------------------------------------------


def test_exactly_one_worker_runs_the_loops(cluster, node_url):
    checks: dict[str, dict] = {}
    deadline = time.monotonic() + WAIT
    while len(checks) < WORKERS:
        assert time.monotonic() < deadline, f"not every worker answered /readyz: {checks}"
        answer = httpx.get(f"{node_url}/readyz", timeout=10)
        assert answer.status_code == 200, answer.text
        checks[answer.headers["x-twinledger-worker"]] = answer.json()["checks"]
    holder = loop_holder(cluster)
    assert checks[str(holder)]["loops"] == "ok"
    standbys = [pid for pid in checks if pid != str(holder)]
    assert [checks[pid]["loops"] for pid in standbys] == [f"standby: loops run in worker pid {holder}"] * len(standbys)


def test_both_workers_release_keys_and_every_release_has_its_record(cluster, node_url, owner, consumers,
                                                                   published, domain):
    answers: list[httpx.Response] = []
    for _ in range(10):  # rounds until both workers served releases (the kernel picks per connection)
        bodies = [key_body(domain, consumers[n % 2], published.asset_id, published.version) for n in range(16)]
        answers += release_keys(node_url, bodies)
        if len({a.headers.get("x-twinledger-worker") for a in answers}) >= WORKERS:
            break
    assert [a.status_code for a in answers] == [200] * len(answers), [a.text for a in answers if a.status_code != 200]
    assert len({a.headers["x-twinledger-worker"] for a in answers}) == WORKERS

    records = all_records(owner)
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))  # gapless across both workers
    released = {r["seq"] for r in records if r["kind"] == "key_released"}
    assert {a.json()["audit_seq"] for a in answers} <= released
    consumer_addresses = {account.address for account, _ in consumers}
    assert sum(1 for r in records if r["kind"] == "key_released" and r["actor"] in consumer_addresses) == len(answers)


def test_concurrent_publishes_and_grants_through_both_workers(cluster, consumers, tmp_path, node_url, domain):
    """Both workers send transactions from the org's one account at the same time."""
    spies = [WorkerSpy() for _ in range(4)]
    clients = [cluster.client("owner", transport=spy) for spy in spies]
    grantee = consumers[0][0].address

    def publish_and_grant(i: int, n: int):
        path = tmp_path / f"part-{i}-{n}.bin"
        path.write_bytes(os.urandom(4096))
        pub = clients[i].publish(path, name=f"part {i}-{n}", kind="dataset")
        clients[i].grant(pub.asset_id, grantee, [Permission.READ], ttl_seconds=3600, purpose=PURPOSE)
        return pub

    try:
        done = []
        with ThreadPoolExecutor(len(clients)) as pool:
            for n in range(5):  # rounds until both workers sent transactions
                done += list(pool.map(publish_and_grant, range(len(clients)), [n] * len(clients)))
                writers = {pid for spy in spies for method, _, pid in spy.seen if method == "POST"}
                if len(writers) >= WORKERS:
                    break
    finally:
        for client in clients:
            client.close()
    assert len(writers) == WORKERS
    assert len({p.asset_id for p in done}) == len(done)  # every publish its own asset
    chain = LedgerClient.connect(cluster.rpc_url, cluster.root / "devnet" / "deployment.json")
    for pub in done:
        assert chain.get_asset(pub.asset_id).owner == cluster.nodes["owner"].address
    # and the grants hold, whichever worker indexed what: the grantee gets every key
    bodies = [key_body(domain, consumers[0], p.asset_id, p.version) for p in done]
    assert [a.status_code for a in release_keys(node_url, bodies)] == [200] * len(done)


def test_metrics_count_the_requests_of_both_workers(node_url):
    labels = {"method": "GET", "route": "/healthz", "status": "200"}
    before = metric(node_url, "twinledger_http_requests_total", labels)
    served = set()
    sent = 0
    for _ in range(10):
        for _ in range(20):
            served.add(httpx.get(f"{node_url}/healthz", timeout=10).headers["x-twinledger-worker"])
            sent += 1
        if len(served) >= WORKERS:
            break
    assert len(served) == WORKERS
    deadline = time.monotonic() + 10  # a request is counted just after its answer is sent
    while (counted := metric(node_url, "twinledger_http_requests_total", labels) - before) < sent:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert counted == sent


def test_every_batch_is_anchored_exactly_once_and_verifies(cluster, owner, published):
    assert_anchored_exactly_once(cluster, owner)


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_killing_the_loop_worker_hands_anchoring_over(cluster, node_url, owner, consumers, published, domain):
    serve_pid = cluster.nodes["owner"].proc.pid
    holder = loop_holder(cluster)
    assert holder is not None and parent_of(holder) == serve_pid  # a worker of this node runs the loops
    os.kill(holder, signal.SIGKILL)

    deadline = time.monotonic() + WAIT
    while (new_holder := loop_holder(cluster)) in (holder, None):
        assert time.monotonic() < deadline, f"nobody took the loops over from worker {holder}"
        time.sleep(0.2)
    assert parent_of(new_holder) == serve_pid

    before = owner.audit_head()["last_seq"]
    answers = release_keys(node_url, [key_body(domain, consumers[1], published.asset_id, published.version)
                                      for _ in range(12)])
    assert [a.status_code for a in answers] == [200] * len(answers)
    assert str(holder) not in {a.headers["x-twinledger-worker"] for a in answers}
    head = wait_anchored(owner)
    assert head["anchored_seq"] >= before + len(answers)  # appended after the kill, anchored by the new holder
    assert_anchored_exactly_once(cluster, owner)
    ready = httpx.get(f"{node_url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
