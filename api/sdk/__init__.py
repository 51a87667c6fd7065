"""The TwinLedger Python SDK: an organisation's client of the node HTTP API (docs/api.md).

    from api.sdk import TwinLedgerClient
    with TwinLedgerClient.from_home("~/.twinledger", "acme") as client:
        pub = client.publish("model.onnx", name="pump-twin", kind="model")
        client.grant(pub.asset_id, "oem", "read,sync", ttl_seconds=86400, purpose="twin sync")
        report = client.verify(all=True)          # the own node's audit log vs the chain

Modules: client (TwinLedgerClient), models (returned values and their strict parsing),
_consume (the key-release / fetch / open flow), _audit (audit verification against the
chain), _http (signed requests, problem bodies → typed errors), _multipart (the
reproducible upload body). Errors are api.errors.SdkError and its subclasses.
"""
from api.errors import (
    NodeUnreachableError,
    RemoteAuthError,
    RemoteConflictError,
    RemoteError,
    RemoteForbiddenError,
    RemoteInputError,
    RemoteNotFoundError,
    RemoteUnavailableError,
    SdkError,
    UntrustedAnswerError,
)
from api.sdk._audit import AuditVerification
from api.sdk.client import TwinLedgerClient, parse_target
from api.sdk.models import Consumed, Published, VersionInfo, parse_ref, permission_names

__all__ = [
    "AuditVerification", "Consumed", "NodeUnreachableError", "Published", "RemoteAuthError", "RemoteConflictError",
    "RemoteError", "RemoteForbiddenError", "RemoteInputError", "RemoteNotFoundError", "RemoteUnavailableError",
    "SdkError", "TwinLedgerClient", "UntrustedAnswerError", "VersionInfo", "parse_ref", "parse_target",
    "permission_names",
]
