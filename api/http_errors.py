"""The ONE place where domain errors become HTTP responses (rekor style).

`ERROR_TABLE` maps each error class of vault.errors, ledger.errors (with the generated
revert classes of ledger.reverts) and api.errors to a `Rule`: HTTP status, the machine
code put in the body, and the public message policy — EXPOSE (the exception's message is
written for callers and carries no secrets) or a fixed sentence (the real message goes to
the log only). An exception takes the rule of the nearest class in its MRO that is in
the table; whatever is in none of the trees is a 500 `internal_error` with a fixed
message, logged with its traceback.

Body (`application/problem+json`): {"error": <code>, "detail": <message>} plus
"audit_seq" when the refusal was audited. For api.errors the code is the error's own
`.reason` (the same code as in the audit denial record).

Every decryption failure (DecryptionError and all its subclasses) gives the same status,
code and message: the caller learns nothing about which check failed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import errors as api
from ledger import errors as ledger
from ledger import reverts
from vault import errors as vault

log = logging.getLogger("twinledger.api.errors")

PROBLEM_JSON = "application/problem+json"
EXPOSE = None  # message policy: show str(exc)
REASON = None  # code policy: use exc.reason (api.errors only)


@dataclass(frozen=True)
class Rule:
    status: int
    code: str | None  # None: the exception's `.reason`
    message: str | None  # None: str(exc) is public; else this fixed sentence is shown


def _r(name: str) -> type[BaseException]:
    """A generated revert class by name; AttributeError at import if the ABI lacks it."""
    return getattr(reverts, name)


_DECRYPT = Rule(422, "decryption_failed", "the content could not be decrypted")
_BAD_ARG = Rule(422, "invalid_argument", EXPOSE)
_CHAIN_DOWN = Rule(503, "chain_unavailable", "the chain is unreachable, try again later")
_UPSTREAM = Rule(502, "upstream_error", EXPOSE)

ERROR_TABLE: dict[type[BaseException], Rule] = {
    # -- api.errors ------------------------------------------------------------------
    api.ApiError: Rule(500, REASON, "internal error"),
    api.InputValidationError: Rule(422, REASON, EXPOSE),
    api.InvalidFieldError: Rule(422, REASON, EXPOSE),
    api.MalformedBodyError: Rule(400, REASON, EXPOSE),
    api.MalformedCIDError: Rule(400, REASON, EXPOSE),
    api.NotAcceptableError: Rule(406, REASON, EXPOSE),
    api.PayloadTooLargeError: Rule(413, REASON, EXPOSE),
    api.AuthError: Rule(401, REASON, EXPOSE),
    api.MissingAuthError: Rule(401, REASON, EXPOSE),
    api.BadSignatureError: Rule(401, REASON, EXPOSE),
    api.DeadlineExpiredError: Rule(401, REASON, EXPOSE),
    api.DeadlineTooFarError: Rule(401, REASON, EXPOSE),
    api.ReplayedNonceError: Rule(401, REASON, EXPOSE),
    api.BodyHashMismatchError: Rule(401, REASON, EXPOSE),
    api.ForbiddenError: Rule(403, REASON, EXPOSE),
    api.UnknownOrgError: Rule(403, REASON, EXPOSE),
    api.InactiveOrgError: Rule(403, REASON, EXPOSE),
    api.RecipientMismatchError: Rule(403, REASON, EXPOSE),
    api.NotOwnOrgError: Rule(403, REASON, EXPOSE),
    api.AccessDeniedError: Rule(403, REASON, EXPOSE),
    api.NotFoundError: Rule(404, REASON, EXPOSE),
    api.ConflictError: Rule(409, REASON, EXPOSE),
    api.ConfigError: Rule(500, REASON, "the node is misconfigured"),
    api.KeystoreError: Rule(500, "keystore_error", "the node's keys are unavailable"),
    api.OrgExistsError: Rule(500, "keystore_error", "the node's keys are unavailable"),
    api.OrgNotFoundError: Rule(500, "keystore_error", "the node's keys are unavailable"),
    api.WrongPassphraseError: Rule(500, "keystore_error", "the node's keys are unavailable"),
    # A call this node made to another node (through api/sdk) failed: the other node's
    # answer is relayed as a 502; its text holds only that node's public problem detail.
    api.SdkError: _UPSTREAM,
    api.NodeUnreachableError: Rule(502, "upstream_unreachable", EXPOSE),
    api.UntrustedAnswerError: Rule(502, "upstream_untrusted", EXPOSE),
    api.RemoteError: _UPSTREAM,
    api.RemoteInputError: _UPSTREAM,
    api.RemoteAuthError: _UPSTREAM,
    api.RemoteForbiddenError: _UPSTREAM,
    api.RemoteNotFoundError: _UPSTREAM,
    api.RemoteConflictError: _UPSTREAM,
    api.RemoteUnavailableError: _UPSTREAM,
    # -- vault.errors ----------------------------------------------------------------
    vault.VaultError: Rule(500, "storage_error", "the content store failed"),
    vault.InputValidationError: Rule(422, "invalid_input", EXPOSE),
    vault.InvalidCIDError: Rule(422, "invalid_cid", EXPOSE),
    vault.InvalidKeyError: Rule(422, "invalid_key", EXPOSE),
    vault.InvalidCARError: Rule(422, "invalid_car", EXPOSE),
    vault.DecryptionError: _DECRYPT,
    vault.HeaderError: _DECRYPT,
    vault.HeaderMACError: _DECRYPT,
    vault.PayloadError: _DECRYPT,
    vault.NoIdentityMatchError: Rule(422, "no_identity_match",
                                     "the content is not encrypted to a recipient this node holds"),
    vault.IntegrityError: Rule(422, "integrity_failed", "the content does not match its address or commitment"),
    vault.BlockMismatchError: Rule(422, "integrity_failed", "the content does not match its address or commitment"),
    vault.CommitmentMismatchError: Rule(422, "integrity_failed",
                                        "the content does not match its address or commitment"),
    vault.BlockNotFoundError: Rule(404, "block_not_found", EXPOSE),
    vault.KuboError: Rule(502, "store_error", "the IPFS node failed"),
    vault.KuboUnavailableError: Rule(503, "store_unavailable", "the IPFS node is unreachable, try again later"),
    vault.GatewayError: Rule(502, "gateway_error", "no gateway delivered verifiable content"),
    # -- ledger.errors ---------------------------------------------------------------
    ledger.LedgerError: Rule(500, "ledger_error", "the ledger failed"),
    ledger.InvalidArgumentError: _BAD_ARG,
    ledger.CompilerError: Rule(500, "ledger_error", "the ledger failed"),
    ledger.DevnetError: Rule(503, "devnet_unavailable", "the devnet is not running"),
    ledger.DeploymentError: Rule(503, "deployment_mismatch", "the chain does not hold the expected contracts"),
    ledger.RpcError: _CHAIN_DOWN,
    ledger.TransientRpcError: _CHAIN_DOWN,
    ledger.TransactionError: Rule(502, "transaction_failed", "the transaction failed"),
    ledger.ReceiptTimeoutError: Rule(504, "transaction_timeout", "the transaction was not mined in time"),
    ledger.IndexerError: Rule(503, "indexer_unavailable", "the index is not ready, try again later"),
    ledger.AuditError: Rule(500, "audit_error", "the audit log failed"),
    ledger.AuditVerificationError: Rule(422, "audit_verification_failed", EXPOSE),
    # Reverts carry only public chain data (addresses, ids, names), so their text is shown.
    ledger.ContractRevertError: Rule(409, "contract_revert", EXPOSE),
    reverts.Panic: Rule(500, "contract_panic", "the contract failed unexpectedly"),
    _r("AccessControlUnauthorizedAccount"): Rule(403, "not_authorized", EXPOSE),
    _r("ConsortiumOrgNotRegistered"): Rule(404, "unknown_org", EXPOSE),
    _r("ConsortiumOrgNotActive"): Rule(403, "inactive_org", EXPOSE),
    _r("ConsortiumOrgAlreadyRegistered"): Rule(409, "org_already_registered", EXPOSE),
    _r("ConsortiumOrgAlreadyActive"): Rule(409, "org_already_active", EXPOSE),
    _r("ConsortiumZeroAddress"): _BAD_ARG,
    _r("ConsortiumInvalidName"): _BAD_ARG,
    _r("ConsortiumInvalidRecipient"): _BAD_ARG,
    _r("ConsortiumInvalidEndpoint"): _BAD_ARG,
    _r("AssetLedgerUnknownAsset"): Rule(404, "unknown_asset", EXPOSE),
    _r("AssetLedgerNotOwner"): Rule(403, "not_owner", EXPOSE),
    _r("AssetLedgerAssetRetired"): Rule(409, "asset_retired", EXPOSE),
    _r("AssetLedgerOrgNotActive"): Rule(403, "inactive_org", EXPOSE),
    _r("AssetLedgerInvalidName"): _BAD_ARG,
    _r("AssetLedgerInvalidCid"): _BAD_ARG,
    _r("AssetLedgerInvalidCommitment"): _BAD_ARG,
    _r("AssetLedgerDuplicateCommitment"): Rule(409, "duplicate_commitment", EXPOSE),
    _r("AssetLedgerUnknownParent"): Rule(422, "unknown_parent", EXPOSE),
    _r("AssetLedgerTooManyParents"): _BAD_ARG,
    _r("AssetLedgerInvalidPermissions"): _BAD_ARG,
    _r("AssetLedgerExpiryNotInFuture"): _BAD_ARG,
    _r("AssetLedgerPurposeTooLong"): _BAD_ARG,
    _r("AssetLedgerGrantToOwner"): _BAD_ARG,
    _r("AssetLedgerNoGrant"): Rule(404, "no_grant", EXPOSE),
    _r("AuditAnchorsOrgNotActive"): Rule(403, "inactive_org", EXPOSE),
    _r("AuditAnchorsNonContiguous"): Rule(409, "anchor_not_contiguous", EXPOSE),
    _r("AuditAnchorsInvalidRange"): _BAD_ARG,
    _r("AuditAnchorsEmptyRoot"): _BAD_ARG,
}

INTERNAL = Rule(500, "internal_error", "internal server error")
DOMAIN_ROOTS = (api.ApiError, vault.VaultError, ledger.LedgerError)


def rule_for(exc_type: type[BaseException]) -> Rule:
    """The rule of the nearest class of `exc_type`'s MRO in the table (INTERNAL if none)."""
    for cls in exc_type.__mro__:
        rule = ERROR_TABLE.get(cls)
        if rule is not None:
            return rule
    return INTERNAL


def problem(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """(status, body) for `exc`, as the handlers send it."""
    rule = rule_for(type(exc))
    code = rule.code if rule.code is not None else getattr(exc, "reason", INTERNAL.code)
    detail = str(exc) if rule.message is None else rule.message
    body: dict[str, Any] = {"error": code, "detail": detail}
    audit_seq = getattr(exc, "audit_seq", None)
    if isinstance(audit_seq, int):
        body["audit_seq"] = audit_seq
    return rule.status, body


def reason_code(exc: BaseException) -> str:
    """The machine code of `exc` (for audit denial records)."""
    return problem(exc)[1]["error"]


def problem_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _domain_handler(request: Request, exc: Exception) -> JSONResponse:
    status, body = problem(exc)
    if status >= 500:
        log.error("%s %s failed: %s: %s", request.method, _route(request), type(exc).__name__, exc)
    return problem_response(status, body)


async def _validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem_response(400, {"error": "malformed_json", "detail": "the request body is not valid JSON"})
    parts = []
    for e in errors[:10]:
        loc = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")  # never the input value: it may be a secret
    return problem_response(422, {"error": "invalid_request", "detail": "; ".join(parts) or "invalid request"})


_HTTP_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 413: "payload_too_large",
               415: "unsupported_media_type"}


async def _http_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return problem_response(exc.status_code, {"error": code, "detail": detail}, headers=getattr(exc, "headers", None))


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    # The traceback names code locations; exception messages of our trees carry no
    # secrets (keys have safe reprs), and request bodies/headers are never logged.
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, _route(request), exc_info=exc)
    return problem_response(INTERNAL.status, {"error": INTERNAL.code, "detail": INTERNAL.message})


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", None) or "<unmatched>"


def register_exception_handlers(app: FastAPI) -> None:
    for root in DOMAIN_ROOTS:
        app.add_exception_handler(root, _domain_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_handler)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unhandled)
