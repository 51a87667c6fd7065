"""Hostile deeply nested JSON must raise, not crash, in processes that import eth-account.

py_ecc raises the recursion limit to 100,000 on import; ledger/_recursion.py puts it back.
Each case runs in a fresh interpreter so the import order is the real one.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import json, sys
{imports}
try:
    json.loads("[" * 200_000)
except RecursionError:
    print("recursion-error", sys.getrecursionlimit())
"""


@pytest.mark.parametrize(
    "imports",
    [
        "import ledger\nimport eth_account",        # our package first, then eth-account
        "import api\nfrom web3 import Web3",          # the node's import path
        "import eth_account\nimport ledger",          # eth-account already loaded
    ],
    ids=["ledger-then-eth-account", "api-then-web3", "eth-account-then-ledger"],
)
def test_deep_json_raises_instead_of_segfaulting(imports: str) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"interpreter died with {proc.returncode}: {proc.stderr[-500:]}"
    word, limit = proc.stdout.split()
    assert word == "recursion-error"
    assert int(limit) <= 4000


def test_without_the_guard_py_ecc_really_raises_the_limit() -> None:
    # Shows what the guard is for: eth-account alone leaves the limit at 100,000.
    proc = subprocess.run([sys.executable, "-c", "import sys, eth_account; print(sys.getrecursionlimit())"],
                          capture_output=True, text=True, timeout=120)
    assert int(proc.stdout) >= 100_000
