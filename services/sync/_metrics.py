"""Prometheus metrics of the sync service, in a registry the caller gives (the CLI's
`--metrics-port` serves it). Lag buckets span a devnet's sub-second blocks to an hour of
catching up."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LAG_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)


class SyncMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Histogram("twinledger_sync_lag_seconds",
                             "Registration block time to materialised at the consumer, per version",
                             buckets=LAG_BUCKETS, registry=registry)
        self.materialised = Counter("twinledger_sync_versions_materialised",
                                    "Versions materialised", registry=registry)
        self.bytes = Counter("twinledger_sync_bytes_materialised", "Plaintext bytes materialised", registry=registry)
        self.stopped = Counter("twinledger_sync_assets_stopped", "Assets no longer followed", ["reason"],
                               registry=registry)
        self.errors = Counter("twinledger_sync_errors", "Failed steps (retried on the next pass)", registry=registry)
        self.following = Gauge("twinledger_sync_assets_following", "Assets followed after the last pass",
                               registry=registry)
        self.last_pass = Gauge("twinledger_sync_last_pass_timestamp_seconds", "When the last pass ended",
                               registry=registry)
