"""Deploy the contracts and keep a deployment manifest.

The manifest (JSON) records chain id, contract addresses, the deployment block and the
sha256 of each artifact deployed, so a node can refuse to talk to a chain that does not
hold the contracts it was built for.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger import artifacts
from ledger.anvil import DEV_MNEMONIC
from ledger.errors import DeploymentError

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    consortium: str
    asset_ledger: str
    audit_anchors: str
    deployment_block: int
    admin: str
    artifact_sha256: dict[str, str]
    version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Deployment":
        try:
            data = json.loads(text)
            if data.get("version") != MANIFEST_VERSION:
                raise DeploymentError(f"unsupported manifest version {data.get('version')!r}")
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise DeploymentError(f"deployment manifest is malformed: {exc}") from None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".manifest.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "Deployment":
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DeploymentError(f"no deployment manifest at {path}") from None


def dev_account(index: int) -> LocalAccount:
    """Account `index` of Anvil's development mnemonic (devnet only; never in production)."""
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def _send(w3: Web3, account: LocalAccount, tx: dict) -> dict:
    tx = {**tx, "from": account.address, "nonce": w3.eth.get_transaction_count(account.address, "pending"),
          "chainId": w3.eth.chain_id}
    tx.setdefault("gas", int(w3.eth.estimate_gas(tx) * 1.2))
    fees = w3.eth.fee_history(1, "latest")
    base = fees["baseFeePerGas"][-1]
    tx.setdefault("maxPriorityFeePerGas", 10**9)
    tx.setdefault("maxFeePerGas", 2 * base + 10**9)
    signed = account.sign_transaction(tx)
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction), timeout=60)
    if receipt["status"] != 1:
        raise DeploymentError(f"deployment transaction {receipt['transactionHash'].hex()} reverted")
    return receipt


def deploy(w3: Web3, admin: LocalAccount) -> Deployment:
    """Deploy Consortium(admin), AssetLedger(consortium), AuditAnchors(consortium)."""
    arts = artifacts.all_artifacts()

    def create(name: str, *args: object) -> dict:
        factory = w3.eth.contract(abi=arts[name].abi, bytecode=arts[name].bytecode)
        return _send(w3, admin, factory.constructor(*args).build_transaction({"from": admin.address}))

    consortium = create("Consortium", admin.address)
    ledger = create("AssetLedger", consortium["contractAddress"])
    anchors = create("AuditAnchors", consortium["contractAddress"])
    return Deployment(
        chain_id=w3.eth.chain_id,
        consortium=consortium["contractAddress"],
        asset_ledger=ledger["contractAddress"],
        audit_anchors=anchors["contractAddress"],
        deployment_block=consortium["blockNumber"],
        admin=admin.address,
        artifact_sha256={name: a.sha256 for name, a in arts.items()},
    )


def check(w3: Web3, deployment: Deployment) -> None:
    """Raise DeploymentError unless the chain at `w3` holds this deployment."""
    chain_id = w3.eth.chain_id
    if chain_id != deployment.chain_id:
        raise DeploymentError(f"manifest is for chain {deployment.chain_id}, the node is chain {chain_id}")
    for label, address in (("Consortium", deployment.consortium), ("AssetLedger", deployment.asset_ledger),
                           ("AuditAnchors", deployment.audit_anchors)):
        if len(w3.eth.get_code(Web3.to_checksum_address(address))) == 0:
            raise DeploymentError(f"no {label} contract at {address} on chain {chain_id}: manifest does not match the chain")
    current = {name: a.sha256 for name, a in artifacts.all_artifacts().items()}
    if current != deployment.artifact_sha256:
        changed = sorted(k for k in current if current[k] != deployment.artifact_sha256.get(k))
        raise DeploymentError(f"deployed artifacts differ from the current build ({', '.join(changed)}); redeploy")
