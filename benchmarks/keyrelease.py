"""Key release under concurrent consumers, over real HTTP on loopback.

Starts a devnet and ONE owner node (a real `twinledger serve` process, tests/e2e/cluster.py),
registers --orgs consumer organisations and grants each READ on a published version. Every
consumer signs its own KeyRequests (EIP-712, fresh nonce each) BEFORE the clock starts, so
the measured phase is the node's work: C threads (httpx, keep-alive) POST /v1/keys for
--requests requests in total. The reference in the same run: GET /healthz with the same
client and concurrency (the HTTP stack's floor on this machine).

Prints ONE JSON line: releases/s, latency p50/p90/p99/max, errors, and the number of
`key_released` audit records the node wrote for these consumers — which must equal the
releases served (`audit_equals_releases`). Targets: >= 300 releases/s, p99 <= 100 ms.

    .venv/bin/python benchmarks/keyrelease.py [--consumers 8] [--requests 2000] [--orgs 4]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from eth_account import Account  # noqa: E402

from api.auth.eip712 import Eip712Domain, KeyRequest, new_nonce  # noqa: E402
from ledger.client import LedgerClient  # noqa: E402
from ledger.deployment import dev_account  # noqa: E402
from ledger.models import Permission  # noqa: E402
from tests.e2e.cluster import Cluster  # noqa: E402
from vault.age import X25519Identity  # noqa: E402

TARGET_RPS = 300
TARGET_P99_MS = 100
DEADLINE_AHEAD = 240  # seconds; the node accepts deadlines up to request_max_age (300 s) ahead


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def hammer(url: str, bodies: list[list[bytes]], path: str, method: str = "POST") -> dict:
    """Each thread sends its own list of bodies; latencies (s) and status counts."""
    latencies: list[list[float]] = [[] for _ in bodies]
    statuses: list[dict[int, int]] = [{} for _ in bodies]
    start = threading.Barrier(len(bodies) + 1)

    def worker(i: int) -> None:
        with httpx.Client(base_url=url, timeout=30.0) as client:
            start.wait()
            for body in bodies[i]:
                t0 = time.perf_counter()
                try:
                    if method == "POST":
                        status = client.post(path, content=body, headers={"Content-Type": "application/json"}
                                             ).status_code
                    else:
                        status = client.get(path).status_code
                except httpx.HTTPError:
                    status = 0
                latencies[i].append(time.perf_counter() - t0)
                statuses[i][status] = statuses[i].get(status, 0) + 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    all_lat = sorted(x for lat in latencies for x in lat)
    counts: dict[int, int] = {}
    for s in statuses:
        for k, v in s.items():
            counts[k] = counts.get(k, 0) + v
    ok = counts.get(200, 0)
    return {"requests": len(all_lat), "ok": ok, "errors": len(all_lat) - ok, "status_counts": counts,
            "duration_s": round(elapsed, 3), "per_s": round(ok / elapsed, 1) if elapsed else None,
            "latency_ms": {k: round(percentile(all_lat, q) * 1000, 2)
                           for k, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))},
            "mean_ms": round(statistics.fmean(all_lat) * 1000, 2) if all_lat else None}


def run(consumers: int, requests: int, orgs: int, size: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="tl-keyrelease-") as tmp, \
            Cluster(Path(tmp) / "home", ["owner"], anchor_every_seconds=2.0) as cluster:
        owner = cluster.client("owner")
        admin = LedgerClient.connect(cluster.rpc_url, cluster.root / "devnet" / "deployment.json", dev_account(0))
        members = []
        for i in range(orgs):
            account, identity = Account.create(), X25519Identity.generate()
            admin.register_org(account.address, f"consumer-{i}", str(identity.recipient), "http://127.0.0.1:9")
            members.append((account, identity))
        payload = Path(tmp) / "model.bin"
        payload.write_bytes(os.urandom(size))
        pub = owner.publish(payload, name="benchmarked model", kind="model")
        for account, _ in members:
            owner.grant(pub.asset_id, account.address, [Permission.READ], ttl_seconds=3600, purpose="benchmark")
        domain = Eip712Domain.from_deployment(owner.ledger.deployment)
        start_seq = owner.audit_head()["last_seq"]

        t_sign = time.perf_counter()
        bodies: list[list[bytes]] = [[] for _ in range(consumers)]
        deadline = int(time.time()) + DEADLINE_AHEAD
        for n in range(requests):
            account, identity = members[n % orgs]
            request = KeyRequest(asset=pub.asset_id, version=pub.version, consumer=account.address,
                                 recipient=str(identity.recipient), purpose="benchmark",
                                 permission=int(Permission.READ), nonce=new_nonce(), deadline=deadline)
            signature = request.sign(domain, account)
            bodies[n % consumers].append(json.dumps({"request": request.to_json(),
                                                     "signature": "0x" + signature.hex()}).encode())
        sign_s = time.perf_counter() - t_sign

        url = cluster.nodes["owner"].url
        reference = hammer(url, [[b""] * max(1, len(b)) for b in bodies], "/healthz", method="GET")
        load_before = os.getloadavg()
        releases = hammer(url, bodies, "/v1/keys")
        load_after = os.getloadavg()

        addresses = {a.address for a, _ in members}
        released = 0
        after = start_seq
        while True:
            page = owner.audit_records(kind="key_released", after_seq=after, limit=1000)
            released += sum(1 for r in page["items"] if r["actor"] in addresses)
            if page.get("next_after_seq") is None or not page["items"]:
                break
            after = page["next_after_seq"]
        owner.close()

    return {
        "benchmark": "keyrelease",
        "consumers": consumers, "orgs": orgs, "requests": requests, "payload_bytes": size,
        "releases": releases["ok"], "errors": releases["errors"], "status_counts": releases["status_counts"],
        "releases_per_s": releases["per_s"], "latency_ms": releases["latency_ms"], "mean_ms": releases["mean_ms"],
        "duration_s": releases["duration_s"],
        "audit_key_released": released, "audit_equals_releases": released == releases["ok"],
        "reference_healthz": {"per_s": reference["per_s"], "latency_ms": reference["latency_ms"]},
        "client_signing_s": round(sign_s, 3),
        "targets": {"releases_per_s": TARGET_RPS, "p99_ms": TARGET_P99_MS},
        "meets_targets": {"releases_per_s": (releases["per_s"] or 0) >= TARGET_RPS,
                          "p99_ms": releases["latency_ms"]["p99"] <= TARGET_P99_MS},
        "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in load_after]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--consumers", type=int, default=8, help="concurrent consumer threads")
    parser.add_argument("--requests", type=int, default=2000, help="key requests in total")
    parser.add_argument("--orgs", type=int, default=4, help="consumer organisations (each granted READ)")
    parser.add_argument("--size", type=int, default=1 << 20, help="bytes of the published version")
    args = parser.parse_args()
    if args.consumers < 1 or args.requests < 1 or args.orgs < 1:
        parser.error("--consumers, --requests and --orgs must be >= 1")
    print(json.dumps(run(args.consumers, args.requests, args.orgs, args.size), sort_keys=True))


if __name__ == "__main__":
    main()
