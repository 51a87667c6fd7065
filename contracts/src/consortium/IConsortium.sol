// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/**
 * @dev The consortium registry: which organisations take part, how to reach their node
 * and which age recipient their keys are released to. Everything here is public to every
 * member of the chain: names, endpoints and recipients are not secrets.
 */
interface IConsortium {
    /// @dev An organisation as the chain knows it.
    struct Org {
        string name;
        string ageRecipient;
        string endpoint;
        bool active;
        uint64 registeredAt;
    }

    /// @dev `org` is already registered.
    error ConsortiumOrgAlreadyRegistered(address org);
    /// @dev `org` is not registered.
    error ConsortiumOrgNotRegistered(address org);
    /// @dev `org` is registered but deactivated.
    error ConsortiumOrgNotActive(address org);
    /// @dev `org` is already active.
    error ConsortiumOrgAlreadyActive(address org);
    /// @dev The zero address cannot be an organisation.
    error ConsortiumZeroAddress();
    /// @dev `name` is empty or longer than 64 bytes.
    error ConsortiumInvalidName(string name);
    /// @dev `recipient` is not an age X25519 recipient (`age1` + 58 characters).
    error ConsortiumInvalidRecipient(string recipient);
    /// @dev `endpoint` is empty or longer than 256 bytes.
    error ConsortiumInvalidEndpoint(string endpoint);

    /// @dev Emitted after `org` was registered.
    event OrgRegistered(address indexed org, string name, string ageRecipient, string endpoint);
    /// @dev Emitted after `org` was deactivated by an admin.
    event OrgDeactivated(address indexed org);
    /// @dev Emitted after `org` was reactivated by an admin.
    event OrgReactivated(address indexed org);
    /// @dev Emitted after `org` changed its own age recipient.
    event OrgRecipientUpdated(address indexed org, string ageRecipient);
    /// @dev Emitted after `org` changed its own node endpoint.
    event OrgEndpointUpdated(address indexed org, string endpoint);

    function registerOrg(address org, string calldata name, string calldata ageRecipient, string calldata endpoint)
        external;

    function deactivateOrg(address org) external;

    function reactivateOrg(address org) external;

    function updateRecipient(string calldata ageRecipient) external;

    function updateEndpoint(string calldata endpoint) external;

    function getOrg(address org) external view returns (Org memory);

    function isActive(address org) external view returns (bool);

    function isRegistered(address org) external view returns (bool);

    function members() external view returns (address[] memory);
}
