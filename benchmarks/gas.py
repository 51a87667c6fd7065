"""Gas per ledger operation (deterministic), measured on a private Anvil on a free port.

Prints ONE JSON line: gas used by createAsset, addVersion (one parent, a 36-byte CIDv1),
grant, revoke, and anchor (the org's first batch, then steady-state batches of 10 and of
100,000 records), with the targets and whether each is met.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_utils import keccak  # noqa: E402
from web3 import Web3  # noqa: E402

from ledger.anvil import AnvilProcess, free_port  # noqa: E402
from ledger.client import LedgerClient  # noqa: E402
from ledger.deployment import deploy, dev_account  # noqa: E402
from ledger.models import AssetKind, Permission, VersionRef  # noqa: E402

TARGETS = {"addVersion": 100_000, "grant": 80_000, "revoke": 40_000, "anchor": 60_000}
CIDV1 = bytes.fromhex("01551220") + keccak(b"benchmark payload")  # CIDv1, raw, sha2-256: 36 bytes
RECIPIENT = "age1" + "q" * 58


def measure() -> dict:
    with tempfile.TemporaryDirectory() as tmp, \
            AnvilProcess(port=free_port(), log_file=Path(tmp) / "anvil.log") as node:
        w3 = Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 30}))
        admin = LedgerClient(w3, deploy(w3, dev_account(0)), dev_account(0))
        owner_account, grantee_account = dev_account(1), dev_account(2)
        for account, name in ((owner_account, "owner"), (grantee_account, "grantee")):
            admin.register_org(account.address, name, RECIPIENT, f"http://127.0.0.1/{name}")
        owner = LedgerClient(w3, admin.deployment, owner_account)

        gas: dict[str, int] = {}
        created = owner.create_asset(AssetKind.DATASET, "line-3 vibration sensors", keccak(b"metadata"))
        gas["createAsset"] = created.tx.gas_used
        first = owner.add_version(created.asset_id, CIDV1, keccak(b"commitment 1"), 1 << 28)
        gas["addVersion_first_no_parent"] = first.tx.gas_used
        second = owner.add_version(created.asset_id, CIDV1, keccak(b"commitment 2"), 1 << 28,
                                   [VersionRef(created.asset_id, first.version)])
        gas["addVersion"] = second.tx.gas_used
        gas["grant"] = owner.grant(created.asset_id, grantee_account.address, Permission.READ | Permission.SYNC,
                                   owner.chain_time() + 30 * 86400, "predictive maintenance").gas_used
        gas["revoke"] = owner.revoke(created.asset_id, grantee_account.address).gas_used
        gas["anchor_first_batch_10"] = owner.anchor(1, 10, keccak(b"root 1")).gas_used
        gas["anchor_batch_10"] = owner.anchor(11, 20, keccak(b"root 2")).gas_used
        gas["anchor_batch_100000"] = owner.anchor(21, 100_020, keccak(b"root 3")).gas_used
        gas["anchor"] = max(gas["anchor_batch_10"], gas["anchor_batch_100000"])
    return gas


def main() -> int:
    gas = measure()
    result = {
        "benchmark": "gas",
        "unit": "gas",
        "gas": gas,
        "targets": TARGETS,
        "within_target": {op: gas[op] <= limit for op, limit in TARGETS.items()},
        "notes": "addVersion: 2nd version, 1 parent, 36-byte CIDv1; anchor: steady state (not the org's "
                 "first batch), max of the 10- and 100,000-record batches; revoke includes the storage refund",
    }
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
