// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/**
 * @dev Assets, their versions with lineage, and access grants.
 *
 * State is kept minimal (gas); detail lives in events, from which every node's indexer
 * rebuilds its tables. Everything here is visible to every member of the chain: asset
 * names and kinds, CIDs, sizes, grants and purposes are not secrets.
 */
interface IAssetLedger {
    /// @dev Asset kinds.
    enum Kind {
        Model,
        Dataset,
        Report,
        Other
    }

    /// @dev A reference to one version of one asset (a lineage parent).
    struct VersionRef {
        uint256 assetId;
        uint32 version;
    }

    /// @dev The on-chain state of an asset (one storage slot).
    struct Asset {
        address owner;
        Kind kind;
        bool retired;
        uint32 versionCount;
    }

    /// @dev The on-chain state of a grant (one storage slot). `purposeHash` is the first
    /// 23 bytes of keccak256(purpose), so that a grant fits in one slot.
    struct Grant {
        uint8 permissions;
        uint64 expiry;
        bytes23 purposeHash;
    }

    error AssetLedgerUnknownAsset(uint256 assetId);
    error AssetLedgerNotOwner(uint256 assetId, address caller);
    error AssetLedgerAssetRetired(uint256 assetId);
    error AssetLedgerOrgNotActive(address org);
    error AssetLedgerInvalidName(string name);
    error AssetLedgerInvalidCid(bytes cid);
    error AssetLedgerInvalidCommitment(bytes32 commitment);
    error AssetLedgerDuplicateCommitment(bytes32 commitment, uint256 assetId, uint32 version);
    error AssetLedgerUnknownParent(uint256 assetId, uint32 version);
    error AssetLedgerTooManyParents(uint256 count, uint256 max);
    error AssetLedgerInvalidPermissions(uint8 permissions);
    error AssetLedgerExpiryNotInFuture(uint64 expiry, uint256 blockTimestamp);
    error AssetLedgerPurposeTooLong(uint256 length, uint256 max);
    error AssetLedgerGrantToOwner(uint256 assetId, address grantee);
    error AssetLedgerNoGrant(uint256 assetId, address grantee);

    event AssetCreated(uint256 indexed assetId, address indexed owner, Kind kind, string name, bytes32 metadataDigest);
    event VersionAdded(
        uint256 indexed assetId,
        uint32 indexed version,
        address indexed author,
        bytes cid,
        bytes32 commitment,
        uint64 size,
        VersionRef[] parents
    );
    event AssetRetired(uint256 indexed assetId);
    event AccessGranted(
        uint256 indexed assetId, address indexed grantee, uint8 permissions, uint64 expiry, string purpose
    );
    event AccessRevoked(uint256 indexed assetId, address indexed grantee);

    function createAsset(Kind kind, string calldata name, bytes32 metadataDigest) external returns (uint256 assetId);

    function addVersion(
        uint256 assetId,
        bytes calldata cid,
        bytes32 commitment,
        uint64 size,
        VersionRef[] calldata parents
    ) external returns (uint32 version);

    function retireAsset(uint256 assetId) external;

    function grant(uint256 assetId, address grantee, uint8 permissions, uint64 expiry, string calldata purpose)
        external;

    function revoke(uint256 assetId, address grantee) external;

    function hasAccess(uint256 assetId, address org, uint8 permission) external view returns (bool);

    function hasAccessFor(uint256 assetId, address org, uint8 permission, string calldata purpose)
        external
        view
        returns (bool);

    function getAsset(uint256 assetId) external view returns (Asset memory);

    function getGrant(uint256 assetId, address grantee) external view returns (Grant memory);

    function versionDigest(uint256 assetId, uint32 version) external view returns (bytes32);

    function versionByCommitment(bytes32 commitment) external view returns (uint256 assetId, uint32 version);

    function assetCount() external view returns (uint256);
}
