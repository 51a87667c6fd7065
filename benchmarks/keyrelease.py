"""Key release under concurrent consumers, over real HTTP on loopback.

Starts a devnet and ONE owner node (a real `twinledger serve` process, tests/e2e/cluster.py,
with --workers worker processes: TWINLEDGER_WORKERS, default 2 = this 2-core machine), registers --orgs consumer organisations and grants each READ on a published version. Then,
with --consumers concurrent consumers (closed loop: each sends its next request when the
previous answer is in), split over --client-procs client processes (threads inside, one
keep-alive http.client connection each, so the client's own GIL is not the bottleneck):

  1. reference: GET /healthz, same clients and concurrency (the HTTP stack's floor here);
  2. `presigned`: --requests key requests whose EIP-712 signatures (fresh nonce each) were
     made BEFORE the clock started — signing is the consumer's cost, not the node's, so this
     measures the node;
  3. `sign_on_the_fly`: --requests more, each signed by its consumer inside the timed loop
     (what a real consumer fleet does; the signing shares the same 2 cores as the node).

Latency = one HTTP exchange (send → full answer), measured in the client; in (3) the
signing time is reported apart (`client_sign_ms`). Prints ONE JSON line: releases/s,
latency p50/p90/p99/max per phase, errors, and the number of `key_released` audit records
the node wrote for these consumers — which must equal the releases served in (2) + (3)
(`audit_equals_releases`). The node's CPU (`node_cpu_ms_per_release`) is that of the serve
process and all its descendants (the workers). Targets: >= 300 releases/s, p99 <= 100 ms.

    .venv/bin/python benchmarks/keyrelease.py [--consumers 8] [--requests 2000] [--orgs 4] [--client-procs 2]
                                              [--anchor-every-records N] [--workers 2]
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

try:  # the consumers' signing: eth-hash's C keccak backend when installed (same digests)
    import sha3  # noqa: F401

    os.environ.setdefault("ETH_HASH_BACKEND", "pysha3")
except ImportError:  # pragma: no cover
    pass

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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
JSON_HEADERS = {"Content-Type": "application/json"}


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class Job:
    """What one consumer thread sends: `bodies` (pre-signed), or `count` requests it signs
    itself with `make_body()` (sign on the fly), or `count` GETs of `path`."""

    def __init__(self, path: str, *, bodies: list[bytes] | None = None, count: int = 0,
                 make_body=None, method: str = "POST") -> None:
        self.path, self.bodies, self.count, self.make_body, self.method = path, bodies, count, make_body, method

    def items(self):
        if self.bodies is not None:
            yield from self.bodies
        else:
            for _ in range(self.count):
                yield None


def _consumer(url: str, job: Job, go: threading.Event, out: dict) -> None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", "/healthz")  # open the keep-alive connection before the clock starts
    conn.getresponse().read()
    latencies, signing, statuses = [], [], {}
    go.wait()
    for body in job.items():
        if job.make_body is not None:
            s0 = time.perf_counter()
            body = job.make_body()
            signing.append(time.perf_counter() - s0)
        t0 = time.perf_counter()
        try:
            conn.request(job.method, job.path, body=body, headers=JSON_HEADERS if body else {})
            answer = conn.getresponse()
            answer.read()
            status = answer.status
        except (OSError, http.client.HTTPException):
            status = 0
            conn.close()
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        latencies.append(time.perf_counter() - t0)
        statuses[status] = statuses.get(status, 0) + 1
    out.update(latencies=latencies, signing=signing, statuses=statuses, end=time.monotonic())
    conn.close()


def _client_process(url: str, jobs: list[Job], barrier, results) -> None:
    go = threading.Event()
    outs = [{} for _ in jobs]
    threads = [threading.Thread(target=_consumer, args=(url, job, go, out)) for job, out in zip(jobs, outs)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # let every thread open its connection
    barrier.wait()
    go.set()
    for t in threads:
        t.join()
    results.put(outs)


def hammer(url: str, jobs: list[Job], procs: int) -> dict:
    """Run `jobs` (one per consumer) over `procs` forked client processes; latencies and
    status counts. The clock runs from the common start to the last answer."""
    ctx = multiprocessing.get_context("fork")
    procs = max(1, min(procs, len(jobs)))
    barrier, results = ctx.Barrier(procs + 1), ctx.Queue()
    groups = [jobs[i::procs] for i in range(procs)]
    children = [ctx.Process(target=_client_process, args=(url, g, barrier, results)) for g in groups]
    for c in children:
        c.start()
    barrier.wait()
    t0 = time.monotonic()
    outs = [o for _ in children for o in results.get(timeout=3600)]
    for c in children:
        c.join()
    elapsed = max(o["end"] for o in outs) - t0
    all_lat = sorted(x for o in outs for x in o["latencies"])
    signing = [x for o in outs for x in o["signing"]]
    counts: dict[int, int] = {}
    for o in outs:
        for k, v in o["statuses"].items():
            counts[k] = counts.get(k, 0) + v
    ok = counts.get(200, 0)
    result = {"requests": len(all_lat), "ok": ok, "errors": len(all_lat) - ok, "status_counts": counts,
              "duration_s": round(elapsed, 3), "per_s": round(ok / elapsed, 1) if elapsed else None,
              "latency_ms": {k: round(percentile(all_lat, q) * 1000, 2)
                             for k, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))},
              "mean_ms": round(statistics.fmean(all_lat) * 1000, 2) if all_lat else None}
    if signing:
        result["client_sign_ms"] = round(statistics.fmean(signing) * 1000, 3)
    return result


def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (index 0 = state, 1 = ppid)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants now (the serve process and its worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat(int(entry))[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):  # gone meanwhile
                continue
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU time so far of each of `pids` still running (Linux /proc)."""
    out = {}
    for pid in pids:
        try:
            fields = _stat(pid)
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def machine_jiffies() -> tuple[int, int]:
    """(idle, total) CPU jiffies of the whole machine so far (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


def _phase(result: dict) -> dict:
    return {"releases": result["ok"], "errors": result["errors"], "status_counts": result["status_counts"],
            "releases_per_s": result["per_s"], "latency_ms": result["latency_ms"], "mean_ms": result["mean_ms"],
            "duration_s": result["duration_s"],
            "node_cpu_ms_per_release": round(result["node_cpu_s"] * 1000 / result["ok"], 2) if result["ok"] else None,
            "node_cpu_split_s": result["node_cpu_split_s"], "machine_idle_pct": result["machine_idle_pct"],
            **({"client_sign_ms": result["client_sign_ms"]} if "client_sign_ms" in result else {}),
            "meets_targets": {"releases_per_s": (result["per_s"] or 0) >= TARGET_RPS,
                              "p99_ms": result["latency_ms"]["p99"] <= TARGET_P99_MS}}


def run(consumers: int, requests: int, orgs: int, size: int, procs: int, anchor_every: int | None,
        workers: int) -> dict:
    env = {} if anchor_every is None else {"TWINLEDGER_ANCHOR_EVERY_RECORDS": str(anchor_every)}
    with tempfile.TemporaryDirectory(prefix="tl-keyrelease-") as tmp, \
            Cluster(Path(tmp) / "home", ["owner"], anchor_every_seconds=2.0, env=env, workers=workers) as cluster:
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

        def body_for(n: int, deadline: int) -> bytes:
            account, identity = members[n % orgs]
            request = KeyRequest(asset=pub.asset_id, version=pub.version, consumer=account.address,
                                 recipient=str(identity.recipient), purpose="benchmark",
                                 permission=int(Permission.READ), nonce=new_nonce(), deadline=deadline)
            signature = request.sign(domain, account)
            return json.dumps({"request": request.to_json(), "signature": "0x" + signature.hex()}).encode()

        t_sign = time.perf_counter()
        deadline = int(time.time()) + DEADLINE_AHEAD
        bodies: list[list[bytes]] = [[] for _ in range(consumers)]
        for n in range(requests):
            bodies[n % consumers].append(body_for(n, deadline))
        sign_s = time.perf_counter() - t_sign

        url = cluster.nodes["owner"].url
        pid = cluster.nodes["owner"].proc.pid

        def measured(jobs: list[Job]) -> dict:
            tree = process_tree(pid)  # serve + its workers (a worker restarted meanwhile would be missed)
            cpu0, jiffies0 = cpu_seconds(tree), machine_jiffies()
            result = hammer(url, jobs, procs)
            cpu1, jiffies1 = cpu_seconds(tree), machine_jiffies()
            idle, total = (b - a for a, b in zip(jiffies0, jiffies1))
            result["machine_idle_pct"] = round(100 * idle / total, 1) if total else None
            # includes the node's background loops
            used = {p: cpu1[p] - cpu0[p] for p in cpu1 if p in cpu0}
            result["node_cpu_s"] = sum(used.values())
            # per process, busiest first: how evenly the kernel spread the connections
            result["node_cpu_split_s"] = sorted((round(v, 2) for v in used.values() if v >= 0.05), reverse=True)
            return result

        per = [len(b) for b in bodies]
        reference = hammer(url, [Job("/healthz", count=c, method="GET") for c in per], procs)
        load_before = os.getloadavg()
        presigned = measured([Job("/v1/keys", bodies=b) for b in bodies])
        load_mid = os.getloadavg()

        def signer(i: int):
            counter = iter(range(i, 10**9, consumers))
            return lambda: body_for(next(counter), int(time.time()) + DEADLINE_AHEAD)

        on_the_fly = measured([Job("/v1/keys", count=c, make_body=signer(i)) for i, c in enumerate(per)])
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

    served = presigned["ok"] + on_the_fly["ok"]
    return {
        "benchmark": "keyrelease",
        "consumers": consumers, "client_procs": procs, "node_workers": workers, "anchor_every_records": anchor_every or "node default", "orgs": orgs, "requests_per_phase": requests,
        "payload_bytes": size,
        "presigned": _phase(presigned), "sign_on_the_fly": _phase(on_the_fly),
        "releases": served, "audit_key_released": released, "audit_equals_releases": released == served,
        "reference_healthz": {"per_s": reference["per_s"], "latency_ms": reference["latency_ms"]},
        "client_presigning_s": round(sign_s, 3),
        "targets": {"releases_per_s": TARGET_RPS, "p99_ms": TARGET_P99_MS},
        "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_between": [round(x, 2) for x in load_mid],
                    "loadavg_after": [round(x, 2) for x in load_after]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--consumers", type=int, default=8, help="concurrent consumer threads")
    parser.add_argument("--requests", type=int, default=2000, help="key requests in total")
    parser.add_argument("--orgs", type=int, default=4, help="consumer organisations (each granted READ)")
    parser.add_argument("--size", type=int, default=1 << 20, help="bytes of the published version")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes the consumers are split over")
    parser.add_argument("--anchor-every-records", type=int, default=None,
                        help="the node's audit batch size (default: the node's own default)")
    parser.add_argument("--workers", type=int, default=2,
                        help="node worker processes (twinledger serve --workers; default 2, one per core here)")
    args = parser.parse_args()
    if min(args.consumers, args.requests, args.orgs, args.client_procs) < 1:
        parser.error("--consumers, --requests, --orgs and --client-procs must be >= 1")
    if not 1 <= args.workers <= 32:
        parser.error("--workers must be 1..32")
    print(json.dumps(run(args.consumers, args.requests, args.orgs, args.size, args.client_procs,
                         args.anchor_every_records, args.workers), sort_keys=True))


if __name__ == "__main__":
    main()
