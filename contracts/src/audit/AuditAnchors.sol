// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {IConsortium} from "../consortium/IConsortium.sol";
import {IAuditAnchors} from "./IAuditAnchors.sol";

/**
 * @title AuditAnchors
 * @dev Each active org appends (fromSeq, toSeq, merkleRoot) for its own audit log;
 * fromSeq must be the previous toSeq + 1 (the first batch starts at 1), so a log can
 * neither skip records nor rewrite anchored ones. Roots are stored by (org, toSeq); the
 * batch's fromSeq is in the {AuditBatchAnchored} event and follows from the previous one.
 */
contract AuditAnchors is IAuditAnchors {
    IConsortium public immutable consortium;

    mapping(address org => Head) private _heads;
    mapping(address org => mapping(uint64 toSeq => bytes32)) private _roots;

    constructor(IConsortium consortium_) {
        consortium = consortium_;
    }

    /**
     * @dev Anchors the caller's records fromSeq..toSeq under `merkleRoot`.
     *
     * Requirements: the caller is an active org; fromSeq == head.lastSeq + 1;
     * toSeq >= fromSeq; `merkleRoot` is non-zero.
     *
     * Emits an {AuditBatchAnchored} event.
     */
    function anchor(uint64 fromSeq, uint64 toSeq, bytes32 merkleRoot) external {
        if (!consortium.isActive(msg.sender)) revert AuditAnchorsOrgNotActive(msg.sender);
        Head memory h = _heads[msg.sender];
        if (fromSeq != h.lastSeq + 1) revert AuditAnchorsNonContiguous(msg.sender, h.lastSeq + 1, fromSeq);
        if (toSeq < fromSeq) revert AuditAnchorsInvalidRange(fromSeq, toSeq);
        if (merkleRoot == bytes32(0)) revert AuditAnchorsEmptyRoot();
        _heads[msg.sender] = Head({lastSeq: toSeq, batches: h.batches + 1});
        _roots[msg.sender][toSeq] = merkleRoot;
        emit AuditBatchAnchored(msg.sender, h.batches, fromSeq, toSeq, merkleRoot);
    }

    /// @dev The last anchored sequence number of `org` and its number of batches.
    function head(address org) external view returns (Head memory) {
        return _heads[org];
    }

    /// @dev The root of the batch of `org` that ends at `toSeq` (zero if none).
    function rootOf(address org, uint64 toSeq) external view returns (bytes32) {
        return _roots[org][toSeq];
    }

    /// @dev True if (seq, recordHash) is a leaf of the batch of `org` ending at `toSeq`.
    function verifyRecord(address org, uint64 toSeq, uint256 seq, bytes32 recordHash, bytes32[] calldata proof)
        external
        view
        returns (bool)
    {
        bytes32 root = _roots[org][toSeq];
        if (root == bytes32(0) || seq > toSeq) return false;
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(seq, recordHash))));
        return MerkleProof.verifyCalldata(proof, root, leaf);
    }
}
