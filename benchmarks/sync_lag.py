"""Sync lag: registration receipt → materialised at the consumer (DESIGN §9).

A devnet and two real `twinledger serve` nodes on loopback (the pilot's cluster). The owner
publishes N versions of one asset; the consumer's SyncService follows its SYNC grant in a
thread. For each version: lag = time the materialised event fired − time the owner's
publish returned (the transaction receipt, indexed by the owner's node). Reference in the
same run: the time a plain `get` of the same version takes through the SDK (the pull a
consumer would do by hand: key release + fetch + verify + decrypt + write), so
lag − reference ≈ what following costs on top of fetching (discovery via polling).

Prints ONE JSON line. `--versions`, `--size-kib`, `--poll` to vary.
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

from services.pilot.cluster import Cluster  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=8)
    parser.add_argument("--size-kib", type=int, default=1024)
    parser.add_argument("--poll", type=float, default=0.2, help="sync poll interval (s)")
    args = parser.parse_args()
    if args.versions < 1 or args.size_kib < 1 or args.poll <= 0:
        parser.error("--versions, --size-kib and --poll must be positive")

    from services.sync import Materialised, SyncService

    with tempfile.TemporaryDirectory(prefix="tl-synclag-") as tmp:
        root = Path(tmp)
        with Cluster(root / "cluster", ["owner", "consumer"], anchor_every_seconds=30.0) as cluster:
            owner, consumer = cluster.client("owner"), cluster.client("consumer")
            events: dict[tuple[int, int], float] = {}
            cond = threading.Condition()

            def on_event(event: object) -> None:
                if isinstance(event, Materialised):
                    with cond:
                        events[(event.asset_id, event.version)] = time.time()
                        cond.notify_all()

            payload = root / "payload.bin"
            payload.write_bytes(os.urandom(args.size_kib * 1024))
            first = owner.publish(payload, name="sync-lag-bench", kind="model")
            asset = first.asset_id
            owner.grant(asset, "consumer", ["SYNC", "READ"], ttl_seconds=3600, purpose="bench")

            service = SyncService(consumer, root / "twins", poll_interval=args.poll, on_event=on_event)
            stop = threading.Event()

            def follow() -> None:
                while not stop.is_set():
                    service.run_once(stop)
                    stop.wait(args.poll)

            thread = threading.Thread(target=follow, daemon=True)
            thread.start()
            lags, refs = [], []
            try:
                with cond:  # v1 existed before following started: not a live lag
                    cond.wait_for(lambda: (asset, 1) in events, timeout=120)
                for _ in range(args.versions):
                    payload.write_bytes(os.urandom(args.size_kib * 1024))
                    pub = owner.publish(payload, asset_id=asset)
                    receipt_at = time.time()
                    with cond:
                        if not cond.wait_for(lambda: (asset, pub.version) in events, timeout=120):
                            raise SystemExit(f"sync did not materialise version {pub.version}")
                        lags.append(events[(asset, pub.version)] - receipt_at)
                    t = time.perf_counter()
                    consumer.get(asset, pub.version, root / f"ref-{pub.version}.bin", purpose="bench", record=False)
                    refs.append(time.perf_counter() - t)
            finally:
                stop.set()
                thread.join(timeout=30)
                service.close()

    def q(values: list[float], p: float) -> float:
        values = sorted(values)
        return round(values[min(len(values) - 1, int(round(p * (len(values) - 1))))] * 1000, 1)

    print(json.dumps({
        "benchmark": "sync_lag",
        "versions": args.versions, "size_kib": args.size_kib, "poll_interval_s": args.poll,
        "lag_ms": {"p50": q(lags, 0.5), "p95": q(lags, 0.95), "max": q(lags, 1.0),
                   "mean": round(statistics.mean(lags) * 1000, 1)},
        "reference_get_ms": {"p50": q(refs, 0.5), "max": q(refs, 1.0)},
        "lag_minus_get_p50_ms": round(q(lags, 0.5) - q(refs, 0.5), 1),
        "load_average": round(os.getloadavg()[0], 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
