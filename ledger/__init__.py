"""The chain side of TwinLedger: devnet, deployment, typed contract client, event
indexer, audit log and Merkle anchoring. Knows nothing about encryption or HTTP."""

from ledger import _recursion as _recursion

_recursion.install()
