"""Errors raised by the vault. Nothing here knows about HTTP; api/ maps these to statuses.

    VaultError
    ├── InputValidationError (ValueError)   malformed input at a boundary
    │   ├── InvalidCIDError                  a CID string/bytes that does not parse
    │   ├── InvalidKeyError                  a bad age recipient or identity encoding
    │   └── InvalidCARError                  CAR framing/header that does not parse
    ├── DecryptionError                      every way a ciphertext can be bad; callers
    │   │                                    catch this one and learn nothing more
    │   ├── HeaderError                      the age header does not parse
    │   ├── HeaderMACError                   the header MAC does not verify
    │   └── PayloadError                     a STREAM chunk fails (tamper, truncation,
    │                                        reordering, trailing data)
    ├── NoIdentityMatchError                 no identity unwraps any stanza; says why
    ├── IntegrityError                       content does not match its address/commitment
    │   ├── BlockMismatchError               a block's bytes do not hash to its CID
    │   └── CommitmentMismatchError          decrypted plaintext != on-chain commitment
    ├── BlockNotFoundError (LookupError)     a block is not in the store
    ├── KuboError                            the Kubo RPC API failed
    │   └── KuboUnavailableError             the daemon cannot be reached
    └── GatewayError                         every trustless gateway failed; carries why
"""
from __future__ import annotations


class VaultError(Exception):
    """Root of every vault error."""


class InputValidationError(VaultError, ValueError):
    """Malformed input at a boundary (CID strings, keys, CAR framing, profiles)."""


class InvalidCIDError(InputValidationError):
    pass


class InvalidKeyError(InputValidationError):
    pass


class InvalidCARError(InputValidationError):
    pass


class DecryptionError(VaultError):
    """The ciphertext cannot be decrypted. Subclasses exist for tests and the CCTV
    vectors; callers should catch DecryptionError and reveal nothing more."""


class HeaderError(DecryptionError):
    pass


class HeaderMACError(DecryptionError):
    pass


class PayloadError(DecryptionError):
    pass


class NoIdentityMatchError(VaultError):
    """No identity could unwrap any recipient stanza. `reasons` says why, per stanza."""

    def __init__(self, reasons: list[str] | None = None) -> None:
        self.reasons = list(reasons or [])
        detail = "; ".join(self.reasons) if self.reasons else "no stanzas"
        super().__init__(f"no identity matched any of the recipients ({detail})")


class IntegrityError(VaultError):
    """Content does not match what addresses or commits to it."""


class BlockMismatchError(IntegrityError):
    pass


class CommitmentMismatchError(IntegrityError):
    pass


class BlockNotFoundError(VaultError, LookupError):
    pass


class KuboError(VaultError):
    """The Kubo RPC API answered with an error (its `Message` and `Code` are kept)."""

    def __init__(self, message: str, code: int | None = None, status: int | None = None) -> None:
        self.message = message
        self.code = code
        self.status = status
        super().__init__(message)


class KuboUnavailableError(KuboError):
    pass


class GatewayError(VaultError):
    """Every gateway failed; `attempts` is a list of (gateway, reason)."""

    def __init__(self, cid: str, attempts: list[tuple[str, str]]) -> None:
        self.cid = cid
        self.attempts = list(attempts)
        detail = "; ".join(f"{g}: {r}" for g, r in self.attempts) or "no gateways given"
        super().__init__(f"could not fetch {cid}: {detail}")
