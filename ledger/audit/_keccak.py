"""keccak256 for the audit log, picking the fastest backend installed.

`safe-pysha3` (the C extension eth-hash uses as its `pysha3` backend) costs ~0.6 µs a
call against ~5.5 µs for pycryptodome's `keccak.new(...)`: a 100,000-leaf tree needs
~300,000 calls, so the backend decides whether anchoring fits its time budget. Both give
identical digests (Ethereum's keccak256, not NIST SHA3-256); pycryptodome is the fallback.
"""
from __future__ import annotations

from typing import Callable

try:  # pragma: no cover - which branch runs depends on the environment
    from sha3 import keccak_256 as _k256

    BACKEND = "pysha3"
    new_keccak256 = _k256  # new_keccak256(data).digest(): one call less in hot loops

    def keccak256(data: bytes) -> bytes:
        return _k256(data).digest()

except ImportError:  # pragma: no cover
    from Crypto.Hash import keccak as _keccak

    BACKEND = "pycryptodome"

    def new_keccak256(data: bytes):  # type: ignore[misc]
        return _keccak.new(digest_bits=256, data=data)

    def keccak256(data: bytes) -> bytes:
        return _keccak.new(digest_bits=256, data=data).digest()


keccak256: Callable[[bytes], bytes]
