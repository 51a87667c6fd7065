// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/**
 * @dev Anchors of organisations' audit logs: each org appends Merkle roots over
 * consecutive batches of its own log, with no gaps and no rewrites.
 *
 * Leaves follow OpenZeppelin's StandardMerkleTree: leaf = keccak256(bytes.concat(
 * keccak256(abi.encode(uint256 seq, bytes32 recordHash)))), pairs hashed sorted.
 */
interface IAuditAnchors {
    /// @dev Where an org's log stands on chain: the last anchored sequence number and
    /// how many batches it anchored (one storage slot).
    struct Head {
        uint64 lastSeq;
        uint64 batches;
    }

    error AuditAnchorsOrgNotActive(address org);
    /// @dev The batch does not start right after the last anchored record (gap or overlap).
    error AuditAnchorsNonContiguous(address org, uint64 expectedFromSeq, uint64 fromSeq);
    error AuditAnchorsInvalidRange(uint64 fromSeq, uint64 toSeq);
    error AuditAnchorsEmptyRoot();

    event AuditBatchAnchored(
        address indexed org, uint64 indexed batchIndex, uint64 fromSeq, uint64 toSeq, bytes32 merkleRoot
    );

    function anchor(uint64 fromSeq, uint64 toSeq, bytes32 merkleRoot) external;

    function head(address org) external view returns (Head memory);

    function rootOf(address org, uint64 toSeq) external view returns (bytes32);

    function verifyRecord(address org, uint64 toSeq, uint256 seq, bytes32 recordHash, bytes32[] calldata proof)
        external
        view
        returns (bool);
}
