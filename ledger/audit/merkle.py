"""OpenZeppelin StandardMerkleTree over audit leaves (seq, recordHash).

Hand-written: @openzeppelin/merkle-tree is JavaScript and there is no maintained
Python port. This module follows its `core.ts`/`standard.ts` exactly, so a root built
here is the root that library builds for the same values, and every proof verifies with
OpenZeppelin's `MerkleProof` (as AuditAnchors.verifyRecord does on chain):

- leaf = keccak256(keccak256(abi.encode(uint256 seq, bytes32 recordHash)))
  (abi.encode of these two static types is seq as 32 big-endian bytes || recordHash);
- leaves are sorted ascending by their bytes (`sortLeaves`, the library default);
- the tree is an array of 2n-1 nodes: leaf i of the sorted list sits at index
  2n-2-i (so the leaves appear reversed at the end), node i's children are 2i+1 and
  2i+2, and the root is node 0;
- an internal node is keccak256 of its two children concatenated in ascending order
  (commutative "sorted pair" hashing);
- a proof is the list of siblings from the leaf up to (not including) the root.

Cross-checked in tests against published @openzeppelin/merkle-tree dumps and roots, and
on chain against AuditAnchors.verifyRecord.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from ledger.audit import _keccak
from ledger.audit._keccak import keccak256
from ledger.errors import AuditError

NODE_BYTES = 32


def standard_leaf_hash(abi_encoded: bytes) -> bytes:
    """keccak256(keccak256(abi-encoded value)): a StandardMerkleTree leaf."""
    return keccak256(keccak256(abi_encoded))


def leaf_hash(seq: int, record_hash: bytes) -> bytes:
    """The leaf for audit record `seq` with `record_hash` (32 bytes)."""
    if len(record_hash) != NODE_BYTES:
        raise AuditError(f"record hash must be 32 bytes, got {len(record_hash)}")
    if not 0 <= seq < 2**256:
        raise AuditError(f"seq {seq} does not fit uint256")
    return keccak256(keccak256(seq.to_bytes(32, "big") + record_hash))


def hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak256(a + b if a <= b else b + a)


def make_merkle_tree(leaves: Sequence[bytes]) -> list[bytes]:
    """The node array for `leaves` in the given order (core.ts `makeMerkleTree`)."""
    n = len(leaves)
    if n == 0:
        raise AuditError("a Merkle tree needs at least one leaf")
    for leaf in leaves:
        if len(leaf) != NODE_BYTES:
            raise AuditError("Merkle tree nodes must be 32 bytes")
    tree: list[bytes] = [b""] * (n - 1)
    tree.extend(reversed(leaves))
    h = _keccak.new_keccak256
    for i in range(n - 2, -1, -1):
        a, b = tree[2 * i + 1], tree[2 * i + 2]
        tree[i] = h(a + b if a <= b else b + a).digest()
    return tree


def get_proof(tree: Sequence[bytes], index: int) -> list[bytes]:
    """Siblings of leaf node `index` up to the root (core.ts `getProof`)."""
    if not (0 <= index < len(tree)) or 2 * index + 1 < len(tree):
        raise AuditError(f"index {index} is not a leaf of this tree")
    proof = []
    while index > 0:
        proof.append(tree[index - 1 if index % 2 == 0 else index + 1])
        index = (index - 1) // 2
    return proof


def process_proof(leaf: bytes, proof: Iterable[bytes]) -> bytes:
    """The root that `proof` leads to from `leaf` (core.ts `processProof`, and
    OpenZeppelin MerkleProof.processProof)."""
    if len(leaf) != NODE_BYTES:
        raise AuditError("Merkle leaf must be 32 bytes")
    node = leaf
    for sibling in proof:
        if len(sibling) != NODE_BYTES:
            raise AuditError("Merkle proof nodes must be 32 bytes")
        node = hash_pair(node, sibling)
    return node


@dataclass(frozen=True)
class AuditTree:
    """The StandardMerkleTree of one batch: leaves (seq, recordHash), sorted by hash."""

    tree: tuple[bytes, ...]
    from_seq: int
    to_seq: int
    _index: dict  # seq -> tree index

    @classmethod
    def build(cls, entries: Iterable[tuple[int, bytes]]) -> "AuditTree":
        """A tree over (seq, record_hash) pairs; seqs must be consecutive, ascending."""
        h = _keccak.new_keccak256
        seqs: list[int] = []
        leaves: list[bytes] = []
        expected = None
        for seq, record_hash in entries:
            if expected is not None and seq != expected:
                raise AuditError(f"batch is not contiguous: expected seq {expected}, got {seq}")
            if len(record_hash) != NODE_BYTES:
                raise AuditError(f"record hash of seq {seq} must be 32 bytes")
            expected = seq + 1
            seqs.append(seq)
            leaves.append(h(h(seq.to_bytes(32, "big") + record_hash).digest()).digest())
        if not seqs:
            raise AuditError("a batch needs at least one record")
        order = sorted(range(len(leaves)), key=leaves.__getitem__)
        sorted_leaves = [leaves[i] for i in order]
        tree = make_merkle_tree(sorted_leaves)
        last = len(tree) - 1
        index = {seqs[i]: last - pos for pos, i in enumerate(order)}
        return cls(tuple(tree), seqs[0], seqs[-1], index)

    @property
    def root(self) -> bytes:
        return self.tree[0]

    def __len__(self) -> int:
        return self.to_seq - self.from_seq + 1

    def leaf(self, seq: int) -> bytes:
        return self.tree[self._tree_index(seq)]

    def proof(self, seq: int) -> list[bytes]:
        return get_proof(self.tree, self._tree_index(seq))

    def _tree_index(self, seq: int) -> int:
        try:
            return self._index[seq]
        except KeyError:
            raise AuditError(f"seq {seq} is not in batch {self.from_seq}..{self.to_seq}") from None
