// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title MockSanctionsOracle: a stand-in for Chainalysis's sanctions oracle on anvil.
/// @notice Answers `isSanctioned(address)` like the real one, for the addresses it was
///         deployed with (and those its owner adds or removes). `setBroken(true)` makes
///         every question revert, so tests can see what a non-answer does.
contract MockSanctionsOracle {
    address private immutable owner;
    mapping(address => bool) private listed;
    bool private broken;

    constructor(address[] memory sanctioned) {
        owner = msg.sender;
        for (uint256 i = 0; i < sanctioned.length; i++) {
            listed[sanctioned[i]] = true;
        }
    }

    modifier onlyOwner() {
        require(msg.sender == owner, "not the owner");
        _;
    }

    function addToSanctionsList(address[] calldata addrs) external onlyOwner {
        for (uint256 i = 0; i < addrs.length; i++) {
            listed[addrs[i]] = true;
        }
    }

    function removeFromSanctionsList(address[] calldata addrs) external onlyOwner {
        for (uint256 i = 0; i < addrs.length; i++) {
            listed[addrs[i]] = false;
        }
    }

    function setBroken(bool value) external onlyOwner {
        broken = value;
    }

    function isSanctioned(address addr) external view returns (bool) {
        require(!broken, "oracle broken");
        return listed[addr];
    }
}
