"""Twin sync: follow the assets an org holds SYNC on and materialise every new version.

    from services.sync import SyncService
    with TwinLedgerClient.from_home(home, "oem") as client, SyncService(client, Path("twins")) as sync:
        report = sync.run_once()       # SyncReport(materialised, stopped, purged, errors, following)

Layout: DIR/<asset>/<version>/<filename>, DIR/<asset>/current -> <version> (a relative
symlink), checkpoint DIR/.twinledger-sync/state.json. Modules: service (SyncService),
report (the events and SyncReport), errors; private _layout (the directory and its
crash-safe steps), _checkpoint (the checkpoint's wire format), _metrics (Prometheus).
CLI: services/sync/cli.py (`twinledger sync`).
"""
from services.sync.errors import SyncBusyError, SyncConfigError, SyncError, SyncStateError
from services.sync.report import Materialised, Purged, StoppedAsset, SyncFailure, SyncReport
from services.sync.service import SyncService

__all__ = ["Materialised", "Purged", "StoppedAsset", "SyncBusyError", "SyncConfigError", "SyncError", "SyncFailure",
           "SyncReport", "SyncService", "SyncStateError"]
