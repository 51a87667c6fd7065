"""StandardMerkleTree compatibility with @openzeppelin/merkle-tree (offline part; the
on-chain cross-check against OpenZeppelin MerkleProof is in test_audit_chain.py)."""
from __future__ import annotations

import os

import pytest
from eth_abi import encode
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.audit.merkle import (AuditTree, get_proof, hash_pair, leaf_hash, make_merkle_tree, process_proof,
                                 standard_leaf_hash)
from ledger.errors import AuditError

# Published dumps of @openzeppelin/merkle-tree 1.0.6 for the values "a".."f" with leaf
# encoding ["string"]: github.com/OpenZeppelin/merkle-tree test/dumps/
# standard-v1.sorted.1_0_6.json (sortLeaves: true, the default) and
# standard-v1.unsorted.1_0_6.json (sortLeaves: false). Complete trees with treeIndex per value.
OZ_SORTED_TREE = [
    "6deb52b5da8fd108f79fab00341f38d2587896634c646ee52e49f845680a70c8",
    "52426e0f1f65ff7e209a13b8c29cffe82e3acaf3dad0a9b9088f3b9a61a929c3",
    "fd3cf45654e88d1cc5d663578c82c76f4b5e3826bacaa1216441443504538f51",
    "8076923e76cf01a7c048400a2304c9a9c23bbbdac3a98ea3946340fdafbba34f",
    "965b92c6cf08303cc4feb7f3e0819c436c2cec17c6f0688a6af139c9a368707c",
    "eba909cf4bb90c6922771d7f126ad0fd11dfde93f3937a196274e1ac20fd2f5b",
    "c62a8cfa41edc0ef6f6ae27a2985b7d39c7fea770787d7e104696c6e81f64848",
    "9cf5a63718145ba968a01c1d557020181c5b252f665cf7386d370eddb176517b",
    "9c15a6a0eaeed500fd9eed4cbeab71f797cefcc67bfd46683e4d2e6ff7f06d1c",
    "9a4f64e953595df82d1b4f570d34c4f4f0cfaf729a61e9d60e83e579e1aa283e",
    "19ba6c6333e0e9a15bf67523e0676e2f23eb8e574092552d5e888c64a4bb3681",
]
OZ_SORTED_INDEX = {"a": 8, "b": 10, "c": 7, "d": 5, "e": 9, "f": 6}
OZ_UNSORTED_TREE = [
    "23be0977360f08bb0bd7f709a7d543d2cd779c79c66d74e0441919871647de2b",
    "8f7234e8cfe39c08ca84a3a3e3274f574af26fd15165fe29e09cbab742daccd9",
    "7b0c6cd04b82bfc0e250030a5d2690c52585e0cc6a4f3bc7909d7723b0236ece",
    "03707d7802a71ca56a8ad8028da98c4f1dbec55b31b4a25d536b5309cc20eda9",
    "fa914d99a18dc32d9725b3ef1c50426deb40ec8d0885dac8edcc5bfd6d030016",
    "c62a8cfa41edc0ef6f6ae27a2985b7d39c7fea770787d7e104696c6e81f64848",
    "9a4f64e953595df82d1b4f570d34c4f4f0cfaf729a61e9d60e83e579e1aa283e",
    "eba909cf4bb90c6922771d7f126ad0fd11dfde93f3937a196274e1ac20fd2f5b",
    "9cf5a63718145ba968a01c1d557020181c5b252f665cf7386d370eddb176517b",
    "19ba6c6333e0e9a15bf67523e0676e2f23eb8e574092552d5e888c64a4bb3681",
    "9c15a6a0eaeed500fd9eed4cbeab71f797cefcc67bfd46683e4d2e6ff7f06d1c",
]
# The README example of @openzeppelin/merkle-tree (github.com/OpenZeppelin/merkle-tree
# README.md, "Building a Tree"): two (address, uint256) values, its root, and the proof of
# the first value as printed by the README's "Obtaining a Proof" script.
OZ_README_VALUES = [("0x1111111111111111111111111111111111111111", 5000000000000000000),
                    ("0x2222222222222222222222222222222222222222", 2500000000000000000)]
OZ_README_ROOT = "d4dee0beab2d53f2cc83e567171bd2820e49898130a22622b10ead383e90bd77"
OZ_README_PROOF_0 = ["b92c48e9d7abe27fd8dfd6b5dfdbfb1c9a463f80c712b66f3a5180a090cccafc"]

LETTERS = "abcdef"


def _string_leaves() -> list[bytes]:
    return [standard_leaf_hash(encode(["string"], [v])) for v in LETTERS]


def test_sorted_tree_equals_published_dump():
    tree = make_merkle_tree(sorted(_string_leaves()))
    assert [n.hex() for n in tree] == OZ_SORTED_TREE
    for letter, leaf in zip(LETTERS, _string_leaves()):
        index = OZ_SORTED_INDEX[letter]
        assert tree[index] == leaf
        assert process_proof(leaf, get_proof(tree, index)) == tree[0]


def test_unsorted_tree_equals_published_dump():
    # Leaves in insertion order land reversed at the end of the array (treeIndex 10..5).
    tree = make_merkle_tree(_string_leaves())
    assert [n.hex() for n in tree] == OZ_UNSORTED_TREE


def test_readme_root_and_proof():
    leaves = [standard_leaf_hash(encode(["address", "uint256"], list(v))) for v in OZ_README_VALUES]
    tree = make_merkle_tree(sorted(leaves))
    assert tree[0].hex() == OZ_README_ROOT
    index = tree.index(leaves[0])
    assert [p.hex() for p in get_proof(tree, index)] == OZ_README_PROOF_0


def test_audit_leaf_is_double_keccak_of_abi_encode():
    record_hash = bytes(range(32))
    assert leaf_hash(42, record_hash) == standard_leaf_hash(encode(["uint256", "bytes32"], [42, record_hash]))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 70), st.integers(1, 10**6))
def test_every_proof_of_a_batch_leads_to_its_root(size, start):
    entries = [(start + i, os.urandom(32)) for i in range(size)]
    tree = AuditTree.build(entries)
    # The root is the one a plain StandardMerkleTree gives for the same leaves.
    assert tree.root == make_merkle_tree(sorted(leaf_hash(s, h) for s, h in entries))[0]
    for seq, record_hash in entries:
        proof = tree.proof(seq)
        assert tree.leaf(seq) == leaf_hash(seq, record_hash)
        assert process_proof(leaf_hash(seq, record_hash), proof) == tree.root
        assert len(proof) <= max(1, size - 1).bit_length()
    # Another record hash at the same seq does not prove.
    seq = entries[size // 2][0]
    assert process_proof(leaf_hash(seq, os.urandom(32)), tree.proof(seq)) != tree.root


def test_single_leaf_tree_has_empty_proof_and_root_is_the_leaf():
    tree = AuditTree.build([(1, b"\x01" * 32)])
    assert tree.proof(1) == []
    assert tree.root == leaf_hash(1, b"\x01" * 32)


def test_pair_hashing_is_commutative():
    a, b = os.urandom(32), os.urandom(32)
    assert hash_pair(a, b) == hash_pair(b, a)


@pytest.mark.parametrize("entries, message", [
    ([], "at least one"),
    ([(1, b"\0" * 32), (3, b"\0" * 32)], "not contiguous"),
    ([(1, b"\0" * 31)], "32 bytes"),
])
def test_bad_batches_are_refused(entries, message):
    with pytest.raises(AuditError, match=message):
        AuditTree.build(entries)


def test_proof_for_seq_outside_batch_is_refused():
    tree = AuditTree.build([(5, b"\0" * 32), (6, b"\1" * 32)])
    with pytest.raises(AuditError, match="not in batch 5..6"):
        tree.proof(7)
    with pytest.raises(AuditError, match="not a leaf"):
        get_proof(list(tree.tree), 0)
