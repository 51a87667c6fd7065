// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {IConsortium} from "../consortium/IConsortium.sol";
import {IAssetLedger} from "./IAssetLedger.sol";

/**
 * @title AssetLedger
 * @dev Twin models, datasets and reports: versions with lineage, and who may use them.
 *
 * This contract is also the EIP-712 `verifyingContract` of off-chain key requests
 * (domain name "TwinLedger", version "1"); it exposes the domain through ERC-5267
 * `eip712Domain()` but verifies no signatures itself: organisation nodes do.
 *
 * Per version the chain stores only a digest,
 * `keccak256(abi.encode(assetId, version, keccak256(cid), commitment, size,
 *  keccak256(abi.encode(parents)), author, timestamp))`, plus the commitment's index for
 * idempotent publishing; the full record is in the {VersionAdded} event.
 */
contract AssetLedger is IAssetLedger, EIP712 {
    uint8 public constant READ = 1;
    uint8 public constant SYNC = 2;
    uint8 public constant COMPUTE = 4;
    uint8 private constant _ALL = READ | SYNC | COMPUTE;

    uint256 public constant MAX_PARENTS = 32;
    uint256 public constant MAX_CID_LENGTH = 128;
    uint256 public constant MAX_NAME_LENGTH = 128;
    uint256 public constant MAX_PURPOSE_LENGTH = 256;

    IConsortium public immutable consortium;

    uint256 private _assetCount;
    mapping(uint256 assetId => Asset) private _assets;
    mapping(uint256 assetId => mapping(uint32 version => bytes32)) private _versionDigests;
    /// @dev commitment => (assetId << 32 | version); makes re-publishing the same content a no-op revert.
    mapping(bytes32 commitment => uint256) private _commitments;
    mapping(uint256 assetId => mapping(address grantee => Grant)) private _grants;

    constructor(IConsortium consortium_) EIP712("TwinLedger", "1") {
        consortium = consortium_;
    }

    /**
     * @dev Creates an asset owned by the caller; returns its id (1, 2, ...).
     *
     * Requirements: the caller is an active org; `name` is 1..128 bytes.
     *
     * Emits an {AssetCreated} event.
     */
    function createAsset(Kind kind, string calldata name, bytes32 metadataDigest) external returns (uint256 assetId) {
        _requireActive(msg.sender);
        uint256 nameLength = bytes(name).length;
        if (nameLength == 0 || nameLength > MAX_NAME_LENGTH) revert AssetLedgerInvalidName(name);
        assetId = ++_assetCount;
        _assets[assetId] = Asset({owner: msg.sender, kind: kind, retired: false, versionCount: 0});
        emit AssetCreated(assetId, msg.sender, kind, name, metadataDigest);
    }

    /**
     * @dev Adds the next version of `assetId`; returns its number (1, 2, ...).
     *
     * Requirements:
     * - the caller owns the asset and is active; the asset is not retired;
     * - `cid` is 1..128 bytes (a binary CID); `commitment` is non-zero and was never
     *   registered before (a retry of the same publish reverts with its version);
     * - at most 32 `parents`, each an existing version.
     *
     * Emits a {VersionAdded} event.
     */
    function addVersion(
        uint256 assetId,
        bytes calldata cid,
        bytes32 commitment,
        uint64 size,
        VersionRef[] calldata parents
    ) external returns (uint32 version) {
        Asset storage asset = _ownedLive(assetId);
        if (cid.length == 0 || cid.length > MAX_CID_LENGTH) revert AssetLedgerInvalidCid(cid);
        if (commitment == bytes32(0)) revert AssetLedgerInvalidCommitment(commitment);
        uint256 existing = _commitments[commitment];
        if (existing != 0) {
            revert AssetLedgerDuplicateCommitment(commitment, existing >> 32, uint32(existing));
        }
        if (parents.length > MAX_PARENTS) revert AssetLedgerTooManyParents(parents.length, MAX_PARENTS);
        for (uint256 i = 0; i < parents.length; ++i) {
            VersionRef calldata p = parents[i];
            if (p.version == 0 || p.version > _assets[p.assetId].versionCount) {
                revert AssetLedgerUnknownParent(p.assetId, p.version);
            }
        }
        version = ++asset.versionCount;
        _versionDigests[assetId][version] = keccak256(
            abi.encode(
                assetId,
                version,
                keccak256(cid),
                commitment,
                size,
                keccak256(abi.encode(parents)),
                msg.sender,
                block.timestamp
            )
        );
        _commitments[commitment] = (assetId << 32) | version;
        emit VersionAdded(assetId, version, msg.sender, cid, commitment, size, parents);
    }

    /**
     * @dev Retires `assetId`: no more versions or grants, and {hasAccess} is false for all.
     *
     * Requirements: the caller owns the asset and is active; it is not retired yet.
     *
     * Emits an {AssetRetired} event.
     */
    function retireAsset(uint256 assetId) external {
        Asset storage asset = _ownedLive(assetId);
        asset.retired = true;
        emit AssetRetired(assetId);
    }

    /**
     * @dev Grants (or replaces the grant of) `grantee` on `assetId`: `permissions` is a
     * non-empty subset of READ | SYNC | COMPUTE, valid while block time < `expiry`, for
     * `purpose` (at most 256 bytes; public on chain).
     *
     * Requirements: the caller owns the live asset and is active; `grantee` is an active
     * org other than the owner; `expiry` is in the future.
     *
     * Emits an {AccessGranted} event.
     */
    function grant(uint256 assetId, address grantee, uint8 permissions, uint64 expiry, string calldata purpose)
        external
    {
        _ownedLive(assetId);
        if (grantee == msg.sender) revert AssetLedgerGrantToOwner(assetId, grantee);
        _requireActive(grantee);
        if (permissions == 0 || permissions & ~_ALL != 0) revert AssetLedgerInvalidPermissions(permissions);
        if (expiry <= block.timestamp) revert AssetLedgerExpiryNotInFuture(expiry, block.timestamp);
        if (bytes(purpose).length > MAX_PURPOSE_LENGTH) {
            revert AssetLedgerPurposeTooLong(bytes(purpose).length, MAX_PURPOSE_LENGTH);
        }
        _grants[assetId][grantee] =
            Grant({permissions: permissions, expiry: expiry, purposeHash: bytes23(keccak256(bytes(purpose)))});
        emit AccessGranted(assetId, grantee, permissions, expiry, purpose);
    }

    /**
     * @dev Revokes the grant of `grantee` on `assetId`, effective from the next block.
     * Bytes released before cannot be recalled; publish a new version (new file key) to
     * give later readers forward secrecy.
     *
     * Requirements: the caller owns the asset; a grant exists.
     *
     * Emits an {AccessRevoked} event.
     */
    function revoke(uint256 assetId, address grantee) external {
        _owned(assetId);
        if (_grants[assetId][grantee].permissions == 0) revert AssetLedgerNoGrant(assetId, grantee);
        delete _grants[assetId][grantee];
        emit AccessRevoked(assetId, grantee);
    }

    /**
     * @dev True if `org` may use `assetId` with every bit of `permission`: the asset exists
     * and is not retired, owner and `org` are active, and `org` is the owner or holds an
     * unexpired grant with those bits. False (never a revert) for unknown assets.
     */
    function hasAccess(uint256 assetId, address org, uint8 permission) public view returns (bool) {
        if (permission == 0 || permission & ~_ALL != 0) revert AssetLedgerInvalidPermissions(permission);
        Asset storage asset = _assets[assetId];
        if (asset.owner == address(0) || asset.retired) return false;
        if (!consortium.isActive(org)) return false;
        if (org == asset.owner) return true;
        if (!consortium.isActive(asset.owner)) return false;
        Grant storage g = _grants[assetId][org];
        return g.permissions & permission == permission && block.timestamp < g.expiry;
    }

    /// @dev {hasAccess}, and the grant was made for exactly `purpose` (owners: any purpose).
    function hasAccessFor(uint256 assetId, address org, uint8 permission, string calldata purpose)
        external
        view
        returns (bool)
    {
        if (!hasAccess(assetId, org, permission)) return false;
        if (org == _assets[assetId].owner) return true;
        return _grants[assetId][org].purposeHash == bytes23(keccak256(bytes(purpose)));
    }

    /// @dev The on-chain state of `assetId`; reverts with {AssetLedgerUnknownAsset} if unknown.
    function getAsset(uint256 assetId) external view returns (Asset memory) {
        return _existing(assetId);
    }

    /// @dev The grant of `grantee` on `assetId` (all zero if none).
    function getGrant(uint256 assetId, address grantee) external view returns (Grant memory) {
        return _grants[assetId][grantee];
    }

    /// @dev The digest of a version's record (zero if the version does not exist).
    function versionDigest(uint256 assetId, uint32 version) external view returns (bytes32) {
        return _versionDigests[assetId][version];
    }

    /// @dev Where `commitment` was registered, or (0, 0).
    function versionByCommitment(bytes32 commitment) external view returns (uint256 assetId, uint32 version) {
        uint256 packed = _commitments[commitment];
        return (packed >> 32, uint32(packed));
    }

    /// @dev How many assets exist; ids are 1..assetCount.
    function assetCount() external view returns (uint256) {
        return _assetCount;
    }

    function _existing(uint256 assetId) private view returns (Asset storage asset) {
        asset = _assets[assetId];
        if (asset.owner == address(0)) revert AssetLedgerUnknownAsset(assetId);
    }

    function _owned(uint256 assetId) private view returns (Asset storage asset) {
        asset = _existing(assetId);
        if (asset.owner != msg.sender) revert AssetLedgerNotOwner(assetId, msg.sender);
        _requireActive(msg.sender);
    }

    function _ownedLive(uint256 assetId) private view returns (Asset storage asset) {
        asset = _owned(assetId);
        if (asset.retired) revert AssetLedgerAssetRetired(assetId);
    }

    function _requireActive(address org) private view {
        if (!consortium.isActive(org)) revert AssetLedgerOrgNotActive(org);
    }
}
