"""Errors raised by the node (api/). Nothing here knows about HTTP: api/http_errors.py maps
every class below (and the vault and ledger trees) to a status code in one table.

    ApiError                              `.reason`: stable machine code (audit denials, JSON)
    ├── InputValidationError (ValueError) malformed input from outside       invalid_input
    │   ├── InvalidFieldError             one named field is bad (`.field`)  invalid_field
    │   ├── MalformedBodyError            the body is not valid JSON/shape    malformed_body
    │   ├── MalformedCIDError             a CID in the URL does not parse     invalid_cid
    │   └── NotAcceptableError            no representation the client takes  not_acceptable
    ├── PayloadTooLargeError              body larger than max_upload_bytes   payload_too_large
    ├── AuthError                         a request could not be authenticated
    │   ├── MissingAuthError              X-TwinLedger-* headers missing      missing_auth
    │   ├── BadSignatureError             does not recover the claimed signer bad_signature
    │   │                                 (also: signed for another chain/contract)
    │   ├── DeadlineExpiredError          deadline has passed                 deadline_expired
    │   ├── DeadlineTooFarError           deadline beyond max window          deadline_too_far
    │   ├── ReplayedNonceError            nonce already used by this signer   replayed_nonce
    │   └── BodyHashMismatchError         streamed body != signed body hash   body_hash_mismatch
    ├── ForbiddenError                    authenticated, but not allowed
    │   ├── UnknownOrgError               signer is not a registered org      unknown_org
    │   ├── InactiveOrgError              signer org is deactivated           inactive_org
    │   ├── RecipientMismatchError        recipient != registered recipient   recipient_mismatch
    │   ├── NotOwnOrgError                route needs this node's own org     not_own_org
    │   └── AccessDeniedError             on-chain policy says no             access_denied
    ├── NotFoundError (LookupError)       unknown asset/version/CID/record    not_found
    ├── ConflictError                     conflicts with current state        conflict
    ├── ConfigError                       node settings invalid or missing    config_error
    ├── KeystoreError                     org keys at rest
    │   ├── OrgExistsError                `org init` on an existing org      org_exists
    │   ├── OrgNotFoundError              no such org under the home          org_not_found
    │   └── WrongPassphraseError          keystore MAC mismatch               wrong_passphrase
    └── SdkError                          client side (api/sdk, CLI) of a call to a node
        ├── NodeUnreachableError          no answer (connect error, timeout)  node_unreachable
        ├── UntrustedAnswerError          a node's answer is malformed,       untrusted_answer
        │                                 contradicts the chain, or carries a bad receipt
        └── RemoteError                   a node answered with a problem body: `.status`,
            │                             `.reason` (the node's code), `.detail`, `.audit_seq`
            ├── RemoteInputError          400 / 413 / 422
            ├── RemoteAuthError           401
            ├── RemoteForbiddenError      403 (policy denials carry the audit_seq)
            ├── RemoteNotFoundError       404 (also a LookupError)
            ├── RemoteConflictError       409
            └── RemoteUnavailableError    502 / 503 / 504 (transient: worth a retry)

Every instance may carry `audit_seq` (the audit record that documents a refusal); the
HTTP layer adds it to the problem body when set. Subclasses for a use case pass a more
specific `reason` to the constructor (e.g. NotFoundError(..., reason="not_anchored_yet")).
Reasons the node's use cases use with the base classes (api/usecases/):
    NotFoundError        unknown_asset_version, not_owner_node, not_anchored_yet, unknown_audit_record
    AccessDeniedError    compute_never_releases_keys, no_grant, grant_revoked, grant_expired,
                         permission_not_granted, purpose_mismatch, asset_retired, owner_inactive
    ConflictError        idempotency_key_reused, publish_in_progress
    InputValidationError invalid_permission, invalid_receipt, invalid_parents, invalid_multipart
"""
from __future__ import annotations


class ApiError(Exception):
    """Root of every node error. `reason` is a stable snake_case code."""

    reason: str = "api_error"

    def __init__(self, message: str = "", *, reason: str | None = None, audit_seq: int | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.reason)
        if reason is not None:
            self.reason = reason
        self.audit_seq = audit_seq

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.reason


class InputValidationError(ApiError, ValueError):
    """Malformed input from outside."""

    reason = "invalid_input"


class InvalidFieldError(InputValidationError):
    """One named field of the input is malformed."""

    reason = "invalid_field"

    def __init__(self, field: str, problem: str, **kw) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}", **kw)


class MalformedBodyError(InputValidationError):
    """The request body is not valid JSON or does not have the expected shape."""

    reason = "malformed_body"


class MalformedCIDError(InputValidationError):
    """A CID in the request (e.g. /ipfs/{cid}) does not parse (400, trustless-gateway spec)."""

    reason = "invalid_cid"


class NotAcceptableError(InputValidationError):
    """The client accepts none of the representations the route serves (406)."""

    reason = "not_acceptable"


class PayloadTooLargeError(ApiError):
    """The request body is larger than the node accepts."""

    reason = "payload_too_large"


class AuthError(ApiError):
    """The request could not be authenticated."""

    reason = "unauthenticated"


class MissingAuthError(AuthError):
    """The request lacks the X-TwinLedger-* authentication headers."""

    reason = "missing_auth"


class BadSignatureError(AuthError):
    """The signature does not recover the claimed signer (or was made for another domain)."""

    reason = "bad_signature"


class DeadlineExpiredError(AuthError):
    """The request's deadline has passed."""

    reason = "deadline_expired"


class DeadlineTooFarError(AuthError):
    """The request's deadline is further ahead than the node accepts."""

    reason = "deadline_too_far"


class ReplayedNonceError(AuthError):
    """This signer already used this nonce."""

    reason = "replayed_nonce"


class BodyHashMismatchError(AuthError):
    """The body received does not hash to the signed body hash."""

    reason = "body_hash_mismatch"


class ForbiddenError(ApiError):
    """The caller is authenticated but not allowed to do this."""

    reason = "forbidden"


class UnknownOrgError(ForbiddenError):
    """The signer is not a registered organisation."""

    reason = "unknown_org"


class InactiveOrgError(ForbiddenError):
    """The signer's organisation is deactivated."""

    reason = "inactive_org"


class RecipientMismatchError(ForbiddenError):
    """The requested recipient is not the consumer's registered age recipient."""

    reason = "recipient_mismatch"


class NotOwnOrgError(ForbiddenError):
    """Only this node's own organisation may call this route."""

    reason = "not_own_org"


class AccessDeniedError(ForbiddenError):
    """The on-chain policy does not allow this."""

    reason = "access_denied"


class NotFoundError(ApiError, LookupError):
    """The thing asked for does not exist."""

    reason = "not_found"


class ConflictError(ApiError):
    """The request conflicts with the current state."""

    reason = "conflict"


class ConfigError(ApiError):
    """The node's settings are invalid or incomplete."""

    reason = "config_error"


class KeystoreError(ApiError):
    """The organisation's keys at rest could not be created or loaded."""

    reason = "keystore_error"


class OrgExistsError(KeystoreError):
    """An organisation with this name already exists under the home directory."""

    reason = "org_exists"


class OrgNotFoundError(KeystoreError):
    """No organisation with this name under the home directory."""

    reason = "org_not_found"


class WrongPassphraseError(KeystoreError):
    """The passphrase does not open the keystore."""

    reason = "wrong_passphrase"


class SdkError(ApiError):
    """A call from the SDK (or CLI) to a node failed."""

    reason = "sdk_error"


class NodeUnreachableError(SdkError):
    """The node did not answer (connection refused, timeout, broken connection)."""

    reason = "node_unreachable"


class UntrustedAnswerError(SdkError):
    """A node's answer is malformed, contradicts the chain (e.g. a version record whose
    digest differs from the on-chain one) or carries an invalid signed receipt."""

    reason = "untrusted_answer"


class RemoteError(SdkError):
    """A node answered with a problem body. `reason` is the node's machine code
    (`access_denied`, `replayed_nonce`, ...), `detail` its message, `status` the HTTP
    status and `audit_seq` the node's audit record of the refusal (when audited)."""

    reason = "remote_error"

    def __init__(self, message: str = "", *, status: int = 0, reason: str | None = None,
                 detail: str | None = None, audit_seq: int | None = None, url: str | None = None) -> None:
        super().__init__(message, reason=reason, audit_seq=audit_seq)
        self.status = status
        self.detail = detail if detail is not None else self.message
        self.url = url


class RemoteInputError(RemoteError):
    """The node refused the request as malformed (400, 413, 422)."""


class RemoteAuthError(RemoteError):
    """The node could not authenticate the request (401)."""


class RemoteForbiddenError(RemoteError):
    """The node refused: policy denial, inactive org, not the node's own org (403)."""


class RemoteNotFoundError(RemoteError, LookupError):
    """The node does not know the asset, version, record or CID (404)."""


class RemoteConflictError(RemoteError):
    """The request conflicts with the node's or the chain's state (409)."""


class RemoteUnavailableError(RemoteError):
    """The node or its chain/store is temporarily unavailable (502, 503, 504)."""
