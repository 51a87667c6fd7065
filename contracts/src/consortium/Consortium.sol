// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IConsortium} from "./IConsortium.sol";

/**
 * @title Consortium
 * @dev Registry of member organisations. Admins (CONSORTIUM_ADMIN_ROLE) register,
 * deactivate and reactivate organisations; an organisation updates its own age
 * recipient and node endpoint. Every change is an event, hence part of the audit trail.
 */
contract Consortium is IConsortium, AccessControl {
    bytes32 public constant CONSORTIUM_ADMIN_ROLE = keccak256("CONSORTIUM_ADMIN_ROLE");

    uint256 private constant _MAX_NAME = 64;
    uint256 private constant _MAX_ENDPOINT = 256;
    uint256 private constant _RECIPIENT_LENGTH = 62; // "age1" + 58 bech32 characters

    mapping(address org => Org) private _orgs;
    address[] private _members;

    constructor(address admin) {
        if (admin == address(0)) revert ConsortiumZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(CONSORTIUM_ADMIN_ROLE, admin);
    }

    /**
     * @dev Registers `org`, active from now on.
     *
     * Requirements:
     * - the caller has CONSORTIUM_ADMIN_ROLE;
     * - `org` is not the zero address and not registered yet;
     * - `name` is 1..64 bytes, `ageRecipient` looks like an age X25519 recipient,
     *   `endpoint` is 1..256 bytes.
     *
     * Emits an {OrgRegistered} event.
     */
    function registerOrg(address org, string calldata name, string calldata ageRecipient, string calldata endpoint)
        external
        onlyRole(CONSORTIUM_ADMIN_ROLE)
    {
        if (org == address(0)) revert ConsortiumZeroAddress();
        if (_orgs[org].registeredAt != 0) revert ConsortiumOrgAlreadyRegistered(org);
        uint256 nameLength = bytes(name).length;
        if (nameLength == 0 || nameLength > _MAX_NAME) revert ConsortiumInvalidName(name);
        _checkRecipient(ageRecipient);
        _checkEndpoint(endpoint);
        _orgs[org] = Org({
            name: name,
            ageRecipient: ageRecipient,
            endpoint: endpoint,
            active: true,
            registeredAt: uint64(block.timestamp)
        });
        _members.push(org);
        emit OrgRegistered(org, name, ageRecipient, endpoint);
    }

    /**
     * @dev Deactivates `org`: it gets no keys and cannot publish, grant or anchor.
     *
     * Requirements: the caller has CONSORTIUM_ADMIN_ROLE; `org` is registered and active.
     *
     * Emits an {OrgDeactivated} event.
     */
    function deactivateOrg(address org) external onlyRole(CONSORTIUM_ADMIN_ROLE) {
        Org storage o = _registered(org);
        if (!o.active) revert ConsortiumOrgNotActive(org);
        o.active = false;
        emit OrgDeactivated(org);
    }

    /**
     * @dev Reactivates `org`.
     *
     * Requirements: the caller has CONSORTIUM_ADMIN_ROLE; `org` is registered and inactive.
     *
     * Emits an {OrgReactivated} event.
     */
    function reactivateOrg(address org) external onlyRole(CONSORTIUM_ADMIN_ROLE) {
        Org storage o = _registered(org);
        if (o.active) revert ConsortiumOrgAlreadyActive(org);
        o.active = true;
        emit OrgReactivated(org);
    }

    /**
     * @dev The caller replaces its own age recipient (key rotation).
     *
     * Requirements: the caller is a registered, active org; `ageRecipient` is valid.
     *
     * Emits an {OrgRecipientUpdated} event.
     */
    function updateRecipient(string calldata ageRecipient) external {
        Org storage o = _activeCaller();
        _checkRecipient(ageRecipient);
        o.ageRecipient = ageRecipient;
        emit OrgRecipientUpdated(msg.sender, ageRecipient);
    }

    /**
     * @dev The caller replaces its own node endpoint.
     *
     * Requirements: the caller is a registered, active org; `endpoint` is 1..256 bytes.
     *
     * Emits an {OrgEndpointUpdated} event.
     */
    function updateEndpoint(string calldata endpoint) external {
        Org storage o = _activeCaller();
        _checkEndpoint(endpoint);
        o.endpoint = endpoint;
        emit OrgEndpointUpdated(msg.sender, endpoint);
    }

    /// @dev The record of `org`; reverts with {ConsortiumOrgNotRegistered} if unknown.
    function getOrg(address org) external view returns (Org memory) {
        return _registered(org);
    }

    /// @dev True if `org` is registered and active.
    function isActive(address org) external view returns (bool) {
        return _orgs[org].active;
    }

    /// @dev True if `org` was ever registered.
    function isRegistered(address org) external view returns (bool) {
        return _orgs[org].registeredAt != 0;
    }

    /// @dev Every registered organisation, in registration order.
    function members() external view returns (address[] memory) {
        return _members;
    }

    function _registered(address org) private view returns (Org storage o) {
        o = _orgs[org];
        if (o.registeredAt == 0) revert ConsortiumOrgNotRegistered(org);
    }

    function _activeCaller() private view returns (Org storage o) {
        o = _registered(msg.sender);
        if (!o.active) revert ConsortiumOrgNotActive(msg.sender);
    }

    function _checkRecipient(string calldata recipient) private pure {
        bytes calldata r = bytes(recipient);
        if (r.length != _RECIPIENT_LENGTH || r[0] != "a" || r[1] != "g" || r[2] != "e" || r[3] != "1") {
            revert ConsortiumInvalidRecipient(recipient);
        }
    }

    function _checkEndpoint(string calldata endpoint) private pure {
        uint256 length = bytes(endpoint).length;
        if (length == 0 || length > _MAX_ENDPOINT) revert ConsortiumInvalidEndpoint(endpoint);
    }
}
