// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title OddLogs: emits `Transfer(address,address,uint256)` logs in shapes a
///        payment watcher must not mistake for an ERC-20 payment.
/// @notice Tests configure this contract as "the USDC" so that only the log's
///         shape decides: an ERC-721 style Transfer (value indexed, four
///         topics, no data), a Transfer with short data, and, for contrast, a
///         well-formed ERC-20 Transfer.
contract OddLogs {
    bytes32 private constant TRANSFER = keccak256("Transfer(address,address,uint256)");

    /// @notice ERC-721 style: from, to and tokenId all indexed (4 topics, empty data).
    function nftTransfer(address from, address to, uint256 tokenId) external {
        bytes32 sig = TRANSFER;
        assembly {
            log4(0, 0, sig, from, to, tokenId)
        }
    }

    /// @notice Three topics like ERC-20, but a 1-byte data field instead of 32 bytes.
    function shortTransfer(address from, address to) external {
        bytes32 sig = TRANSFER;
        assembly {
            mstore(0, shl(248, 0x01))
            log3(0, 1, sig, from, to)
        }
    }

    /// @notice A well-formed ERC-20 Transfer log (no balances behind it).
    function transfer(address from, address to, uint256 value) external {
        bytes32 sig = TRANSFER;
        assembly {
            mstore(0, value)
            log3(0, 32, sig, from, to)
        }
    }
}
