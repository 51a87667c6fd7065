"""LedgerClient plumbing: argument validation, read-only mode, connect() with a manifest,
the EIP-712 domain, and the Python version digest."""
from __future__ import annotations

import dataclasses

import pytest
from eth_abi import encode
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.anvil import free_port
from ledger.client import LedgerClient, compute_version_digest, purpose_hash
from ledger.errors import DeploymentError, InvalidArgumentError, RpcError, TransactionError
from ledger.models import AssetKind, VersionRef

ZERO32 = b"\0" * 32


@pytest.mark.parametrize("call", [
    lambda c: c.create_asset(AssetKind.MODEL, "x", b"short"),
    lambda c: c.add_version(1, "bafy-not-bytes", ZERO32, 1),
    lambda c: c.add_version(1, b"\x01", b"\x01" * 31, 1),
    lambda c: c.add_version(1, b"\x01", b"\x01" * 32, -1),
    lambda c: c.add_version(1, b"\x01", b"\x01" * 32, 2**64),
    lambda c: c.add_version(1, b"\x01", b"\x01" * 32, 1, [(1, 1)]),
    lambda c: c.add_version(1, b"\x01", b"\x01" * 32, 1, [VersionRef(1, 2**32)]),
    lambda c: c.grant(1, "not-an-address", 1, 10),
    lambda c: c.grant(1, "0x" + "11" * 20, 256, 10),
    lambda c: c.anchor(0, 1, b"\x01" * 33),
    lambda c: c.anchor(True, 1, b"\x01" * 32),
    lambda c: c.get_org("0x1234"),
])
def test_malformed_arguments_raise_before_anything_is_sent(orgs, call):
    client = orgs[0]
    nonce = client.w3.eth.get_transaction_count(client.address, "pending")
    with pytest.raises(InvalidArgumentError):
        call(client)
    assert client.w3.eth.get_transaction_count(client.address, "pending") == nonce


def test_read_only_client_reads_but_cannot_write(w3, deployment, orgs):
    reader = LedgerClient(w3, deployment)
    assert reader.address is None and reader.sender is None
    assert reader.is_active(orgs[0].address)
    with pytest.raises(TransactionError, match="read-only"):
        reader.create_asset(AssetKind.MODEL, "x")


def test_connect_checks_the_manifest(anvil, deployment, tmp_path, dev_accounts):
    manifest = tmp_path / "deployment.json"
    deployment.save(manifest)
    client = LedgerClient.connect(anvil.url, manifest, dev_accounts[0])
    assert client.members() == LedgerClient(client.w3, deployment).members()
    assert client.address == dev_accounts[0].address

    wrong = dataclasses.replace(deployment, asset_ledger="0x" + "42" * 20)
    wrong.save(tmp_path / "wrong.json")
    with pytest.raises(DeploymentError, match="no AssetLedger contract"):
        LedgerClient.connect(anvil.url, tmp_path / "wrong.json")
    dataclasses.replace(deployment, chain_id=1).save(tmp_path / "chain.json")
    with pytest.raises(DeploymentError, match="chain 1"):
        LedgerClient.connect(anvil.url, tmp_path / "chain.json")
    with pytest.raises(DeploymentError, match="no deployment manifest"):
        LedgerClient.connect(anvil.url, tmp_path / "missing.json")
    with pytest.raises(RpcError, match="cannot reach"):
        LedgerClient.connect(f"http://127.0.0.1:{free_port()}", manifest)


def test_eip712_domain(admin, deployment, w3):
    assert admin.eip712_domain() == {"name": "TwinLedger", "version": "1", "chainId": w3.eth.chain_id,
                                     "verifyingContract": deployment.asset_ledger}


def test_chain_time_and_block_number(admin, w3):
    latest = w3.eth.get_block("latest")
    assert admin.block_number() == latest["number"]
    assert admin.chain_time() == latest["timestamp"]


def test_purpose_hash_is_a_keccak_prefix():
    assert purpose_hash("maintenance") == keccak(b"maintenance")[:23]
    assert len(purpose_hash("")) == 23


@settings(max_examples=50, deadline=None)
@given(asset=st.integers(1, 2**64), version=st.integers(1, 2**32 - 1), cid=st.binary(min_size=1, max_size=128),
       size=st.integers(0, 2**64 - 1), parents=st.lists(st.tuples(st.integers(1, 2**64), st.integers(1, 2**32 - 1)),
                                                        max_size=4))
def test_version_digest_layout(asset, version, cid, size, parents):
    """The documented layout, spelled out independently of the client's encoding."""
    commitment, author, ts = keccak(cid), "0x" + "ab" * 20, 1_700_000_000
    parents_blob = encode(["uint256", "uint256"], [32, len(parents)]) + b"".join(
        encode(["uint256", "uint32"], list(p)) for p in parents)
    expected = keccak(
        asset.to_bytes(32, "big") + version.to_bytes(32, "big") + keccak(cid) + commitment + size.to_bytes(32, "big")
        + keccak(parents_blob) + bytes(12) + bytes.fromhex("ab" * 20) + ts.to_bytes(32, "big"))
    refs = [VersionRef(*p) for p in parents]
    assert compute_version_digest(asset, version, cid, commitment, size, refs, author, ts) == expected
