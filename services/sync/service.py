"""The twin sync service (DESIGN §5 "Sync"): follow the assets this org holds SYNC on,
consume every new version through key release, materialise it under DIR.

    with SyncService(client, Path("twins"), purge_on_revoke=True) as sync:
        report = sync.run_once()            # one pass; or sync.run(stop_event) to follow

One pass:
 1. reconcile DIR with the checkpoint: leftovers of a killed run removed, `current`
    re-pointed, versions found on disk adopted, versions gone from disk forgotten (_layout.py);
 2. candidates: the SYNC grants in force in the own node's feed (GET /v1/grants via the
    SDK), the assets already followed, and (with `assets`) only those;
 3. for each candidate the CHAIN decides (the node's index may lag a revocation):
    retired? hasAccessFor(asset, me, SYNC, purpose)? If not, the reason is read from the
    chain, the asset is reported stopped once, and purged if purge_on_revoke;
 4. every version 1..versionCount not on disk, in order: record from the own node
    (checked against the chain's digest by the SDK), staging dir, `client.get(...,
    permission=SYNC, purpose=<the grant's>)` — key release, verified fetch, decryption,
    commitment check, atomic write, consumption recorded — then the commit rename,
    `current` switch and checkpoint write. A denial that means the grant ended stops the
    asset like step 3; any other failure is reported and retried on the next pass.

Consumption count: a version is asked for once per pass until its directory exists. A
process killed after the key release but before the commit rename asks again when it
restarts, so each version is released at most once more per kill; a version whose
directory exists is never asked for again.

TEST HOOK (used only by tests/services/test_sync.py): TWINLEDGER_SYNC_TEST_PAUSE=
"after_fetch=S[,after_commit=S]" sleeps S seconds after the version was fetched into
its staging dir / after the commit rename, so a test can SIGKILL the process there.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from api.errors import ApiError, RemoteForbiddenError, RemoteNotFoundError
from ledger.errors import LedgerError
from ledger.models import Permission
from services.sync._checkpoint import AssetEntry, SyncState, VersionEntry, decode_state, encode_state
from services.sync._layout import SyncDir, safe_filename
from services.sync.errors import SyncConfigError, SyncError, SyncStateError
from services.sync.report import Event, Materialised, Purged, StoppedAsset, SyncFailure, SyncReport
from vault.errors import VaultError

log = logging.getLogger("twinledger.sync")

PAUSE_ENV = "TWINLEDGER_SYNC_TEST_PAUSE"
PAUSE_POINTS = ("after_fetch", "after_commit")
# a key release refused for one of these reasons means the grant ended: stop, don't retry
_DENIAL_STOPS = {"grant_revoked": "revoked", "no_grant": "revoked", "permission_not_granted": "revoked",
                 "purpose_mismatch": "revoked", "grant_expired": "expired", "asset_retired": "retired",
                 "owner_inactive": "inactive", "inactive_org": "inactive"}
_STEP_ERRORS = (ApiError, LedgerError, VaultError, SyncStateError, OSError)


def parse_pause_hook(text: str | None) -> dict[str, float]:
    """"after_fetch=30,after_commit=5" → {point: seconds}; "" / None → {}."""
    pauses: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        point, sep, seconds = part.partition("=")
        point = point.strip()
        try:
            value = float(seconds)
        except ValueError:
            value = -1.0
        if not sep or point not in PAUSE_POINTS or not 0 <= value <= 3600:
            raise SyncConfigError(f"{PAUSE_ENV} must be POINT=SECONDS[,...] with POINT in "
                                  f"{', '.join(PAUSE_POINTS)} and 0..3600 s, got {part.strip()!r:.60}")
        pauses[point] = value
    return pauses


class _GrantEnded(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class SyncService:
    """Sync the assets `client`'s org holds SYNC on into `into` (see the module docstring).
    `client` is an api.sdk.TwinLedgerClient; `registry` a prometheus CollectorRegistry for
    the metrics; `on_event` receives each Materialised/StoppedAsset/Purged/SyncFailure as
    it happens. The directory lock is taken by the first pass and held until close()."""

    def __init__(self, client: Any, into: Path | str, *, assets: Sequence[int] | None = None,
                 purge_on_revoke: bool = False, poll_interval: float = 1.0, clock: Callable[[], float] = time.time,
                 registry: Any = None, on_event: Callable[[Event], None] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        if assets is not None:
            if any(isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < 2**256 for a in assets):
                raise SyncConfigError(f"assets must be asset ids (unsigned integers), got {list(assets)!r:.80}")
            assets = sorted(set(assets))
        if not isinstance(poll_interval, (int, float)) or not 0 < poll_interval <= 86400:
            raise SyncConfigError(f"poll_interval must be in (0, 86400] seconds, got {poll_interval!r}")
        self.client = client
        self.into = Path(into)
        self.assets = assets
        self.purge_on_revoke = purge_on_revoke
        self.poll_interval = float(poll_interval)
        self.clock = clock
        self.on_event = on_event
        self._pauses = parse_pause_hook((os.environ if environ is None else environ).get(PAUSE_ENV))
        self._metrics = None
        if registry is not None:
            from services.sync._metrics import SyncMetrics

            self._metrics = SyncMetrics(registry)
        self._dir = SyncDir(self.into)
        self._state: SyncState | None = None
        self._saved: bytes | None = None
        self._stop = threading.Event()
        self._me = client.keys.address

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        self._dir.close()
        self._state = self._saved = None

    def __enter__(self) -> "SyncService":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, stop: threading.Event) -> None:
        """Pass after pass every poll_interval until `stop` is set (checked between
        versions too: the version being fetched is finished first)."""
        while not stop.is_set():
            self.run_once(stop)
            stop.wait(self.poll_interval)

    # -- one pass ------------------------------------------------------------------------------

    def run_once(self, stop: threading.Event | None = None) -> SyncReport:
        """One pass; `stop` (optional) is checked between versions."""
        if stop is not None:
            self._stop = stop
        state = self._open()
        report = SyncReport()
        self._reconcile(state)
        try:
            head = self.client.ledger.block_number()
        except _STEP_ERRORS as exc:
            self._emit(report, SyncFailure(None, None, getattr(exc, "reason", type(exc).__name__),
                                           f"cannot read the chain head: {exc}"))
            return report
        # The pass decides from the chain, so the own node's catalog it reads must be at
        # least as new as the chain head seen now (read your writes, DESIGN §6).
        with self.client.reading_after(head):
            return self._pass(state, report)

    def _pass(self, state: SyncState, report: SyncReport) -> SyncReport:
        feed = self._feed(report)
        for asset_id in self._candidates(state, feed):
            if self._stop.is_set():
                break
            item = feed.get(asset_id)
            entry = state.assets.setdefault(asset_id, AssetEntry())
            if item is not None:
                entry.purpose = item["purpose"]
            try:
                self._sync_asset(asset_id, entry, report, known_grant=item is not None)
            except _GrantEnded as ended:
                self._stop_asset(asset_id, entry, ended.reason, ended.detail, report)
            except _STEP_ERRORS as exc:
                self._emit(report, SyncFailure(asset_id, None, getattr(exc, "reason", type(exc).__name__), str(exc)))
        for asset_id, entry in sorted(state.assets.items()):
            if self.purge_on_revoke and entry.status == "stopped" and entry.versions and self._selected(asset_id):
                self._purge(asset_id, entry, report)
        report.following = sorted(a for a, e in state.assets.items() if e.status == "following" and self._selected(a))
        self._save()
        if self._metrics is not None:
            self._metrics.following.set(len(report.following))
            self._metrics.last_pass.set(self.clock())
        return report

    def _open(self) -> SyncState:
        if self._state is not None:
            return self._state
        self._dir.open()
        raw = self._dir.read_state()
        state = SyncState()
        if raw is not None:
            try:
                state = decode_state(raw)
                self._saved = raw
            except SyncStateError as exc:
                log.warning("%s; rebuilding the checkpoint from %s", exc, self.into)
        if state.org is not None and state.org.lower() != self._me.lower():
            self._dir.close()
            raise SyncStateError(f"{self.into} is synced for organisation {state.org}, not {self._me}")
        state.org = self._me
        self._state = state
        return state

    def _reconcile(self, state: SyncState) -> None:
        """The directory is the truth: adopt versions on disk, forget versions not on disk."""
        for path in self._dir.clean_leftovers():
            log.info("removed leftover %s", path)
        on_disk = self._dir.scan()
        for asset_id, versions in on_disk.items():
            entry = state.assets.setdefault(asset_id, AssetEntry())
            for version in versions:
                if version not in entry.versions:
                    entry.versions[version] = VersionEntry(size=self._dir.version_bytes(asset_id, version))
            self._dir.point_current(asset_id, versions[-1] if versions else None)
        for asset_id, entry in state.assets.items():
            present = set(on_disk.get(asset_id, ()))
            for version in [v for v in entry.versions if v not in present]:
                del entry.versions[version]

    def _feed(self, report: SyncReport) -> dict[int, dict[str, Any]]:
        """The own node's SYNC grants of this org: {asset id: item} (in force or not)."""
        try:
            items = self.client.grants(grantee=self._me, permission="SYNC")
        except _STEP_ERRORS as exc:
            self._emit(report, SyncFailure(None, None, getattr(exc, "reason", type(exc).__name__),
                                           f"cannot read the grants feed: {exc}"))
            return {}
        feed: dict[int, dict[str, Any]] = {}
        for item in items:
            asset_id = item.get("asset_id") if isinstance(item, dict) else None
            if (isinstance(asset_id, bool) or not isinstance(asset_id, int) or asset_id < 0
                    or not isinstance(item.get("purpose"), str) or not isinstance(item.get("in_force"), bool)):
                self._emit(report, SyncFailure(None, None, "untrusted_answer",
                                               f"malformed grants feed item {item!r:.120}"))
                continue
            feed[asset_id] = item
        return feed

    def _selected(self, asset_id: int) -> bool:
        return self.assets is None or asset_id in self.assets

    def _candidates(self, state: SyncState, feed: Mapping[int, dict[str, Any]]) -> list[int]:
        if self.assets is not None:
            return list(self.assets)
        found = {a for a, item in feed.items() if item["in_force"]}
        found |= {a for a, e in state.assets.items() if e.status == "following" or (e.versions and e.status == "new")}
        return sorted(found)

    # -- one asset -------------------------------------------------------------------------------

    def _sync_asset(self, asset_id: int, entry: AssetEntry, report: SyncReport, *, known_grant: bool) -> None:
        ledger = self.client.ledger
        asset = ledger.get_asset(asset_id)
        if not asset.retired and ledger.has_access_for(asset_id, self._me, Permission.SYNC, entry.purpose):
            if entry.status != "following":
                log.info("following asset %s", asset_id)
            entry.status, entry.reason = "following", None
        else:
            reason, detail = self._why_not(asset_id, asset, entry, known_grant)
            raise _GrantEnded(reason, detail)
        if entry.filename is None:
            entry.name = str(self.client.asset(asset_id).get("name", ""))
            entry.filename = safe_filename(entry.name)
        for version in range(1, asset.version_count + 1):
            if self._stop.is_set():
                return
            if version in entry.versions:
                continue
            if not self._materialise(asset_id, version, entry, report):
                return

    def _why_not(self, asset_id: int, asset: Any, entry: AssetEntry, known_grant: bool) -> tuple[str, str]:
        """Why hasAccessFor is false, from the chain (the same order as the owner's node)."""
        ledger = self.client.ledger
        if asset.retired:
            return "retired", "the owner retired the asset"
        if not ledger.get_org(asset.owner).active:
            return "inactive", "the owning organisation is deactivated"
        if not ledger.is_active(self._me):
            return "inactive", "this organisation is deactivated"
        grant = ledger.get_grant(asset_id, self._me)
        if not grant.permissions & Permission.SYNC:
            if entry.status == "following" or entry.versions or known_grant:
                return "revoked", "the SYNC grant was revoked"
            return "no_grant", "this organisation holds no SYNC grant on the asset"
        if grant.expiry <= ledger.chain_time():
            return "expired", f"the SYNC grant expired at {grant.expiry}"
        return "revoked", "the grant was replaced by one for another purpose"

    def _materialise(self, asset_id: int, version: int, entry: AssetEntry, report: SyncReport) -> bool:
        """Fetch and commit one version; False if the asset should wait for the next pass."""
        try:
            info = self.client.version(asset_id, version)  # checked against the chain's digest
        except RemoteNotFoundError:
            return False  # registered on chain, not indexed by the own node yet
        except _STEP_ERRORS as exc:
            self._emit(report, SyncFailure(asset_id, version, getattr(exc, "reason", type(exc).__name__), str(exc)))
            return False
        assert entry.filename is not None
        staging = self._dir.staging(asset_id, version)
        try:
            consumed = self.client.get(asset_id, version, staging / entry.filename, permission=Permission.SYNC,
                                       purpose=entry.purpose)
            self._pause("after_fetch")
            final = self._dir.commit(staging, asset_id, version)
        except RemoteForbiddenError as exc:
            self._dir.discard(staging)
            if exc.reason in _DENIAL_STOPS:
                raise _GrantEnded(_DENIAL_STOPS[exc.reason], f"the owner's node refused the key: {exc.reason}") from None
            self._emit(report, SyncFailure(asset_id, version, exc.reason, str(exc)))
            return False
        except _STEP_ERRORS as exc:
            self._dir.discard(staging)
            self._emit(report, SyncFailure(asset_id, version, getattr(exc, "reason", type(exc).__name__), str(exc)))
            return False
        except BaseException:
            self._dir.discard(staging)
            raise
        now = self.clock()
        lag = now - info.timestamp
        entry.versions[version] = VersionEntry(size=consumed.size, cid=consumed.cid, sha256=consumed.sha256,
                                               timestamp=info.timestamp, materialised_at=now, lag_seconds=lag)
        self._pause("after_commit")
        self._dir.point_current(asset_id, max(entry.versions))
        self._save()
        if self._metrics is not None:
            self._metrics.lag.observe(max(0.0, lag))
            self._metrics.materialised.inc()
            self._metrics.bytes.inc(consumed.size)
        self._emit(report, Materialised(
            asset_id=asset_id, version=version, path=final / entry.filename, cid=consumed.cid, size=consumed.size,
            lag_seconds=lag, sha256=consumed.sha256, timestamp=info.timestamp, materialised_at=now,
            key_audit_seq=consumed.key_audit_seq, consumption_audit_seq=consumed.consumption_audit_seq))
        return True

    def _stop_asset(self, asset_id: int, entry: AssetEntry, reason: str, detail: str, report: SyncReport) -> None:
        if entry.status == "stopped":
            return
        entry.status, entry.reason = "stopped", reason
        self._save()  # stopped before purged: a crash in between purges on the next pass
        if self._metrics is not None:
            self._metrics.stopped.labels(reason=reason).inc()
        self._emit(report, StoppedAsset(asset_id, reason, detail))  # type: ignore[arg-type]

    def _purge(self, asset_id: int, entry: AssetEntry, report: SyncReport) -> None:
        try:
            versions = self._dir.purge(asset_id)
        except OSError as exc:
            self._emit(report, SyncFailure(asset_id, None, "purge_failed", f"cannot purge: {exc}"))
            return
        entry.versions.clear()
        self._save()
        self._emit(report, Purged(asset_id, tuple(versions), self._dir.asset_dir(asset_id)))

    # -- plumbing --------------------------------------------------------------------------------

    def _save(self) -> None:
        """Write the checkpoint if it changed (no fsync per idle pass)."""
        if self._state is None:
            return
        data = encode_state(self._state)
        if data != self._saved:
            self._dir.write_state(data)
            self._saved = data

    def _emit(self, report: SyncReport, event: Event) -> None:
        report.add(event)
        if isinstance(event, SyncFailure):
            log.info("sync: %s", event)
            if self._metrics is not None:
                self._metrics.errors.inc()
        if self.on_event is not None:
            self.on_event(event)

    def _pause(self, point: str) -> None:
        seconds = self._pauses.get(point)
        if seconds:
            log.warning("TEST HOOK %s: pausing %.1f s at %s", PAUSE_ENV, seconds, point)
            time.sleep(seconds)


__all__ = ["SyncService", "SyncError", "parse_pause_hook"]
