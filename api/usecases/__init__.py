"""The node's use cases: pure orchestration over api.node.Node (ledger + vault + audit),
raising domain errors (api.errors, ledger.errors, vault.errors). No FastAPI here; the
routers in api/routers/ translate HTTP to these calls.

    publish      create_asset, check_publishable, publish_version (idempotent under a key)
    release      release_key (the key-release decision, audited before answering)
    grants       grant, revoke
    consumption  record_consumption
"""
from api.usecases.consumption import record_consumption
from api.usecases.grants import GrantChange, grant, revoke
from api.usecases.publish import CreatedAssetResult, PublishedVersion, check_publishable, create_asset, publish_version
from api.usecases.release import KeyRelease, release_key

__all__ = ["CreatedAssetResult", "GrantChange", "KeyRelease", "PublishedVersion", "check_publishable", "create_asset",
           "grant", "publish_version", "record_consumption", "release_key", "revoke"]
