// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title ContractWallet: a minimal smart-contract wallet that speaks EIP-1271.
/// @notice For tests of contract-wallet claims. The wallet holds tokens and pays
///         through `execute` (called by its operator, the deployer); it accepts a
///         signature when `signer` produced it over the given hash, as Safe-style
///         wallets do for their owners.
contract ContractWallet {
    bytes4 internal constant MAGIC = 0x1626ba7e; // isValidSignature(bytes32,bytes)

    address public immutable signer;
    address public immutable operator;

    constructor(address signer_) {
        signer = signer_;
        operator = msg.sender;
    }

    function execute(address to, bytes calldata data) external returns (bytes memory) {
        require(msg.sender == operator, "not operator");
        (bool ok, bytes memory out) = to.call(data);
        require(ok, "call failed");
        return out;
    }

    function isValidSignature(bytes32 hash, bytes calldata sig) external view returns (bytes4) {
        if (sig.length != 65) return 0xffffffff;
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (v < 27) v += 27;
        address got = ecrecover(hash, v, r, s);
        return got != address(0) && got == signer ? MAGIC : bytes4(0xffffffff);
    }
}
