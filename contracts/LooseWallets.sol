// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title LooseWallets: contract wallets whose EIP-1271 answers are not the
///        exact 32-byte magic word, for tests that such answers are refusals.
/// @notice Each pays through `execute` (called by its operator, the deployer),
///         like ContractWallet; none of them checks any signature.
abstract contract OperatedWallet {
    address public immutable operator;

    constructor() {
        operator = msg.sender;
    }

    function execute(address to, bytes calldata data) external returns (bytes memory) {
        require(msg.sender == operator, "not operator");
        (bool ok, bytes memory out) = to.call(data);
        require(ok, "call failed");
        return out;
    }
}

/// @notice Answers any unknown call with its own calldata, so an
///         isValidSignature call comes back starting with 0x1626ba7e.
contract EchoWallet is OperatedWallet {
    fallback(bytes calldata input) external returns (bytes memory) {
        return input;
    }
}

/// @notice Answers the bare 4-byte selector, not an ABI word.
contract ShortAnswerWallet is OperatedWallet {
    fallback(bytes calldata) external returns (bytes memory) {
        return hex"1626ba7e";
    }
}

/// @notice Answers the magic word followed by a second word.
contract LongAnswerWallet is OperatedWallet {
    function isValidSignature(bytes32, bytes calldata) external pure returns (bytes4, uint256) {
        return (0x1626ba7e, 1);
    }
}

/// @notice Answers a word that starts with the magic value but is not zero after it.
contract DirtyAnswerWallet is OperatedWallet {
    fallback(bytes calldata) external returns (bytes memory) {
        return abi.encodePacked(bytes32(0x1626ba7e00000000000000000000000000000000000000000000000000000001));
    }
}

/// @notice Reverts every signature check.
contract RevertingWallet is OperatedWallet {
    function isValidSignature(bytes32, bytes calldata) external pure returns (bytes4) {
        revert("no signatures here");
    }
}
