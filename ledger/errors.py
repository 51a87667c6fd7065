"""Errors raised by the ledger package. Nothing here knows about HTTP.

    LedgerError
    ├── InvalidArgumentError          a caller passed a malformed value (also a ValueError)
    ├── CompilerError                 contracts could not be compiled
    ├── DevnetError                   the local Anvil devnet could not start/stop/answer
    ├── DeploymentError               manifest missing or does not match the chain
    ├── RpcError                      the JSON-RPC endpoint failed (after retries)
    │   └── TransientRpcError         a failure worth retrying (connection, timeout, 429/5xx)
    ├── TransactionError              a transaction failed for a reason other than a revert
    │   └── ReceiptTimeoutError       no receipt within the timeout
    ├── ContractRevertError           a revert, decoded: `.name`, `.args_by_name` (and `.args`)
    │   └── one subclass per custom error, e.g. AssetLedgerNotOwner (generated in
    │       ledger/reverts.py from the ABIs, so the tree always matches the contracts)
    ├── IndexerError                  the event indexer failed (e.g. waiting timed out)
    └── AuditError                    the audit log or its anchoring failed
        └── AuditVerificationError    a record, proof or anchor does not verify
"""
from __future__ import annotations


class LedgerError(Exception):
    """Root of every ledger error."""


class InvalidArgumentError(LedgerError, ValueError):
    """A value handed to the ledger API is malformed (wrong length, out of range, ...)."""


class CompilerError(LedgerError):
    pass


class DevnetError(LedgerError):
    pass


class DeploymentError(LedgerError):
    pass


class RpcError(LedgerError):
    pass


class TransientRpcError(RpcError):
    pass


class TransactionError(LedgerError):
    pass


class ReceiptTimeoutError(TransactionError):
    pass


class ContractRevertError(LedgerError):
    """A contract call reverted. `name` is the custom error (or "Error"/"Panic"),
    `args_by_name` its decoded arguments by name, `args` the same values in ABI order,
    `selector` the 4-byte selector ("0x…"), `data` the raw revert data ("0x…")."""

    def __init__(self, name: str, args: dict | None = None, selector: str = "", data: str = "") -> None:
        self.name = name
        self.args_by_name = dict(args or {})
        self.selector = selector
        self.data = data
        rendered = ", ".join(f"{k}={v!r}" for k, v in self.args_by_name.items())
        super().__init__(f"{name}({rendered})")
        # BaseException.__init__ set args to (message,); expose the decoded values instead.
        self.args = tuple(self.args_by_name.values())
        self._message = f"{name}({rendered})"

    def __str__(self) -> str:
        return self._message

    def __reduce__(self):  # picklable despite the custom __init__ (e.g. across processes)
        return (self.__class__, (self.name, self.args_by_name, self.selector, self.data))


class IndexerError(LedgerError):
    pass


class AuditError(LedgerError):
    pass


class AuditVerificationError(AuditError):
    pass
