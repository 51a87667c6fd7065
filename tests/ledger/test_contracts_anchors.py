"""AuditAnchors: contiguous batches, no gaps or overlaps, and Merkle proofs on chain."""
from __future__ import annotations

import pytest
from eth_abi import encode
from eth_utils import keccak

from ledger import reverts
from ledger.models import AuditHead

ROOT = keccak(b"root")


def leaf(seq: int, record_hash: bytes) -> bytes:
    """OpenZeppelin StandardMerkleTree leaf for (uint256 seq, bytes32 recordHash)."""
    return keccak(keccak(encode(["uint256", "bytes32"], [seq, record_hash])))


def pair(a: bytes, b: bytes) -> bytes:
    return keccak(min(a, b) + max(a, b))


def test_first_batch_starts_at_one_and_head_advances(orgs, isolated):
    org = orgs[0]
    assert org.audit_head(org.address) == AuditHead(0, 0)
    with pytest.raises(reverts.AuditAnchorsNonContiguous) as exc:
        org.anchor(2, 5, ROOT)
    assert exc.value.args_by_name == {"org": org.address, "expectedFromSeq": 1, "fromSeq": 2}
    org.anchor(1, 10, ROOT)
    org.anchor(11, 11, keccak(b"single"))
    assert org.audit_head(org.address) == AuditHead(11, 2)
    assert org.root_of(org.address, 10) == ROOT
    assert org.root_of(org.address, 11) == keccak(b"single")
    assert org.root_of(org.address, 5) == b"\0" * 32
    assert org.audit_head(orgs[1].address) == AuditHead(0, 0)  # per org


@pytest.mark.parametrize(("from_seq", "label"), [(12, "gap"), (10, "overlap"), (1, "rewrite")])
def test_gaps_and_overlaps_are_rejected(orgs, isolated, from_seq, label):
    org = orgs[0]
    org.anchor(1, 10, ROOT)
    with pytest.raises(reverts.AuditAnchorsNonContiguous) as exc:
        org.anchor(from_seq, 20, ROOT)
    assert exc.value.args_by_name == {"org": org.address, "expectedFromSeq": 11, "fromSeq": from_seq}, label


def test_invalid_range_and_empty_root(orgs, isolated):
    org = orgs[0]
    with pytest.raises(reverts.AuditAnchorsInvalidRange) as exc:
        org.anchor(1, 0, ROOT)
    assert exc.value.args_by_name == {"fromSeq": 1, "toSeq": 0}
    with pytest.raises(reverts.AuditAnchorsEmptyRoot):
        org.anchor(1, 3, b"\0" * 32)


def test_inactive_and_unregistered_orgs_cannot_anchor(admin, orgs, outsider, isolated):
    with pytest.raises(reverts.AuditAnchorsOrgNotActive) as exc:
        outsider.anchor(1, 1, ROOT)
    assert exc.value.args == (outsider.address,)
    admin.deactivate_org(orgs[1].address)
    with pytest.raises(reverts.AuditAnchorsOrgNotActive) as inactive:
        orgs[1].anchor(1, 1, ROOT)
    assert inactive.value.args == (orgs[1].address,)


def test_verify_record_against_anchored_root(orgs, isolated):
    org = orgs[0]
    hashes = {seq: keccak(text=f"record {seq}") for seq in range(1, 5)}
    leaves = {seq: leaf(seq, h) for seq, h in hashes.items()}
    left, right = pair(leaves[1], leaves[2]), pair(leaves[3], leaves[4])
    org.anchor(1, 4, pair(left, right))
    proofs = {1: [leaves[2], right], 2: [leaves[1], right], 3: [leaves[4], left], 4: [leaves[3], left]}
    for seq, proof in proofs.items():
        assert org.verify_record(org.address, 4, seq, hashes[seq], proof)
    assert not org.verify_record(org.address, 4, 1, hashes[2], proofs[1])  # wrong record
    assert not org.verify_record(org.address, 4, 1, keccak(b"tampered"), proofs[1])
    assert not org.verify_record(org.address, 4, 5, hashes[1], proofs[1])  # seq beyond batch
    assert not org.verify_record(org.address, 3, 1, hashes[1], proofs[1])  # no batch ends at 3
    assert not org.verify_record(orgs[1].address, 4, 1, hashes[1], proofs[1])  # other org's log
