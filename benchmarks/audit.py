"""Audit log benchmark: anchoring, proofs and queries. Prints ONE JSON line.

  - anchor: time for Anchorer.anchor_pending() over --anchor-records (default 100,000)
    records in SQLite: read the batch's hashes from the DB, build the StandardMerkleTree,
    store the batch, send ONE anchor transaction to a real Anvil started here and wait
    for its receipt (target <= 2 s), with the parts timed separately; reference in the
    same run: the same tree built with pycryptodome's keccak instead of safe-pysha3;
  - proof: siblings and bytes of one record's proof in that batch; verification time
    locally (record hash + leaf + Merkle path), by eth_call of AuditAnchors.verifyRecord,
    and the full verify_proof against the chain (rootOf + receipt event);
  - query: p50/p95 latency of AuditLog.query over --records (default 1,000,000) records,
    on SQLite and on PostgreSQL (target p95 <= 50 ms): by asset (first page and the next
    page), by kind + one-day time range (first and next page), by actor; the rows are
    bulk-loaded (executemany / COPY), then ANALYZEd;
  - append: AuditLog.append() per second (each a committed transaction) on both DBs.

    .venv/bin/python benchmarks/audit.py [--records 1000000] [--anchor-records 100000] [--no-postgres]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


from ledger.anvil import AnvilProcess, free_port  # noqa: E402
from ledger.audit import Anchorer, AuditKind, AuditLog, AuditRecord, AuditTree, verify_proof  # noqa: E402
from ledger.audit import _keccak  # noqa: E402
from ledger.audit.chain import ChainAnchors  # noqa: E402
from ledger.audit.log import record_row  # noqa: E402
from ledger.audit.merkle import leaf_hash, process_proof  # noqa: E402
from ledger.client import LedgerClient  # noqa: E402
from ledger.db import make_engine  # noqa: E402
from ledger.deployment import deploy, dev_account  # noqa: E402
from web3 import Web3  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
KINDS = [AuditKind.KEY_RELEASED] * 6 + [AuditKind.KEY_DENIED, AuditKind.CONSUMPTION_RECORDED,
                                         AuditKind.ASSET_PUBLISHED, AuditKind.GRANT_ISSUED, AuditKind.JOB_RUN]
ASSETS = 1000
ACTORS = 200
T0 = 1_700_000_000_000
STEP_MS = 2_500  # one record every 2.5 s on average: 1M records span ~29 days
DAY_MS = 86_400_000
COLUMNS = ("org", "seq", "kind", "time", "actor", "asset_id", "version", "record_hash", "canonical")


def synthetic_rows(org: str, count: int, seed: int = 7, chunk: int = 20_000) -> Iterator[list[tuple]]:
    rnd = random.Random(seed)
    for start in range(1, count + 1, chunk):
        rows = []
        for seq in range(start, min(count, start + chunk - 1) + 1):
            kind = rnd.choice(KINDS)
            details = {"purpose": "maintenance", "nonce": rnd.getrandbits(48)}
            if kind is AuditKind.KEY_DENIED:
                details["reason"] = "grant expired"
            record = AuditRecord(seq=seq, kind=kind, time=T0 + seq * STEP_MS + rnd.randrange(STEP_MS), org=org,
                                 actor=f"0x{rnd.randrange(ACTORS):040x}", asset_id=rnd.randrange(1, ASSETS + 1),
                                 version=rnd.randrange(1, 20), details=details)
            r = record_row(record)
            rows.append(tuple(r[c] for c in COLUMNS))
        yield rows


def bulk_load(log: AuditLog, chunks: Iterator[list[tuple]]) -> int:
    """Insert rows with executemany (SQLite) or COPY (PostgreSQL), then set the counter."""
    engine, last = log.engine, 0
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        postgres = engine.dialect.name == "postgresql"
        for rows in chunks:
            if postgres:
                with cur.copy(f"COPY audit_records ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                cur.executemany(f"INSERT INTO audit_records ({', '.join(COLUMNS)}) VALUES "
                                f"({', '.join('?' * len(COLUMNS))})", rows)
            raw.commit()
            last = rows[-1][1]
        cur.execute("UPDATE audit_heads SET last_seq = %d WHERE org = '%s'" % (last, log.org))
        cur.execute("ANALYZE audit_records" if postgres else "ANALYZE")
        raw.commit()
    finally:
        raw.close()
    return last


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3), "p95_ms": round(p95 * 1000, 3),
            "max_ms": round(ordered[-1] * 1000, 3), "n": len(ordered)}


def query_latencies(log: AuditLog, records: int, samples: int = 200) -> dict[str, dict]:
    rnd = random.Random(11)
    span = records * STEP_MS
    out: dict[str, list[float]] = {k: [] for k in ("asset_page1", "asset_page2", "kind_time_page1",
                                                    "kind_time_page2", "actor_page1")}
    for _ in range(samples):
        asset = rnd.randrange(1, ASSETS + 1)
        t = time.perf_counter()
        page = log.query(asset_id=asset, limit=100)
        out["asset_page1"].append(time.perf_counter() - t)
        if page.next_after_seq is not None:
            t = time.perf_counter()
            log.query(asset_id=asset, after_seq=page.next_after_seq, limit=100)
            out["asset_page2"].append(time.perf_counter() - t)
        since = T0 + rnd.randrange(max(1, span - DAY_MS))
        t = time.perf_counter()
        page = log.query(kind=AuditKind.KEY_DENIED, since=since, until=since + DAY_MS, limit=100)
        out["kind_time_page1"].append(time.perf_counter() - t)
        if page.next_after_seq is not None:
            t = time.perf_counter()
            log.query(kind=AuditKind.KEY_DENIED, since=since, until=since + DAY_MS, after_seq=page.next_after_seq,
                      limit=100)
            out["kind_time_page2"].append(time.perf_counter() - t)
        actor = f"0x{rnd.randrange(ACTORS):040x}"
        t = time.perf_counter()
        log.query(actor=actor, limit=100)
        out["actor_page1"].append(time.perf_counter() - t)
    result = {k: percentiles(v) for k, v in out.items() if v}
    result["p95_ms_worst"] = max(v["p95_ms"] for k, v in result.items())
    return result


def append_rate(log: AuditLog, n: int) -> float:
    elapsed = timed(lambda: [log.append(AuditKind.KEY_RELEASED, "0xbench", 1, 1, {"purpose": "bench"})
                             for _ in range(n)])
    return round(n / elapsed, 1)


def anchor_benchmark(tmp: Path, count: int) -> dict:
    with AnvilProcess(port=free_port(), log_file=tmp / "anvil.log") as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 60}))
        admin, org = dev_account(0), dev_account(1)
        deployment = deploy(w3, admin)
        LedgerClient(w3, deployment, admin).register_org(org.address, "bench", "age1" + "q" * 58,
                                                         "http://127.0.0.1:1")
        log = AuditLog(make_engine(f"sqlite:///{tmp / 'anchor.db'}"), org.address)
        bulk_load(log, synthetic_rows(log.org, count, seed=3))
        sink = ChainAnchors.connect(w3, deployment, org)
        anchorer = Anchorer(log, sink, max_batch=count)
        started = time.perf_counter()
        [batch] = anchorer.anchor_pending()
        anchor_s = time.perf_counter() - started
        assert batch.anchored, batch.last_error

        entries: list = []
        read_s = timed(lambda: entries.extend(log.leaf_entries(1, count)))
        tree_s = timed(lambda: AuditTree.build(entries))
        receipt = w3.eth.get_transaction_receipt(batch.tx_hash)
        reference_s = _reference_tree_seconds(entries)

        seq = count // 2 + 1
        proof = log.proof(seq)
        local = [timed(lambda: (_local_check(proof))) for _ in range(200)]
        onchain = [timed(lambda: sink.verify_record(log.org, proof.to_seq, seq, proof.record_hash, proof.proof))
                   for _ in range(50)]
        source = ChainAnchors.connect(w3, deployment)
        full = [timed(lambda: verify_proof(proof, source)) for _ in range(20)]
        proof_gen = timed(lambda: AuditLog(log.engine, log.org).proof(seq))  # cold: tree rebuilt from DB
        return {
            "records": count, "anchor_s": round(anchor_s, 3), "target_anchor_s": 2.0,
            "db_read_s": round(read_s, 3), "tree_build_s": round(tree_s, 3),
            "tx_and_bookkeeping_s": round(max(0.0, anchor_s - read_s - tree_s), 3),
            "anchor_gas_used": receipt["gasUsed"], "keccak_backend": _keccak.BACKEND,
            "reference_tree_build_pycryptodome_s": reference_s,
            "proof_siblings": len(proof.proof), "proof_bytes": proof.size_bytes,
            "proof_json_bytes": len(proof.to_json().encode()),
            "proof_generation_cold_s": round(proof_gen, 3),
            "verify_local_ms": percentiles(local)["p50_ms"],
            "verify_eth_call_ms": percentiles(onchain)["p50_ms"],
            "verify_proof_full_ms": percentiles(full)["p50_ms"],
        }


def _local_check(proof) -> None:
    from ledger.audit._keccak import keccak256

    record_hash = keccak256(proof.record.encode())
    if process_proof(leaf_hash(proof.seq, record_hash), proof.proof) != proof.root:
        raise SystemExit("local proof check failed")


def _reference_tree_seconds(entries: list) -> float | None:
    """The same tree with pycryptodome's keccak (the fallback backend)."""
    try:
        from Crypto.Hash import keccak
    except ImportError:
        return None

    def slow(data: bytes):
        return keccak.new(digest_bits=256, data=data)

    saved = _keccak.new_keccak256
    _keccak.new_keccak256 = slow
    try:
        return round(timed(lambda: AuditTree.build(entries)), 3)
    finally:
        _keccak.new_keccak256 = saved


def query_benchmark(url: str, records: int) -> dict:
    org = dev_account(1).address
    engine = make_engine(url)
    log = AuditLog(engine, org)
    load_s = timed(lambda: bulk_load(log, synthetic_rows(org, records)))
    result = {"records": records, "bulk_load_s": round(load_s, 1), **query_latencies(log, records),
              "target_p95_ms": 50, "append_per_s": append_rate(log, 500)}
    engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records for the query benchmark")
    parser.add_argument("--anchor-records", type=int, default=100_000, help="records anchored in one batch")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    out: dict = {"benchmark": "audit"}
    with tempfile.TemporaryDirectory(prefix="tl-audit-bench-") as tmp_name:
        tmp = Path(tmp_name)
        out["anchor"] = anchor_benchmark(tmp, min(args.anchor_records, args.records))
        out["query_sqlite"] = query_benchmark(f"sqlite:///{tmp / 'query.db'}", args.records)
        if not args.no_postgres:
            out["query_postgres"] = _with_pg_database(lambda url: query_benchmark(url, args.records))
    print(json.dumps(out, sort_keys=True))


def _with_pg_database(fn: Callable[[str], dict]) -> dict:
    import psycopg

    name = f"tl_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        return {"skipped": f"PostgreSQL not reachable: {exc}"}
    try:
        return fn(PG_ADMIN.rsplit("/", 1)[0] + "/" + name)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
