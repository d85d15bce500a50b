// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

/// @title The payout account: batched collection and disbursement.
/// @notice Requesters approve this contract; its own balance is the payout
/// account. Only the broker's operator key may move tokens: `collect` pulls
/// one payer's debt, `payout` pays many beneficiaries in one transaction.
/// Each call carries an anchor (the settlement's hash of the ledger rows it
/// settles), emitted with every transfer so that an audit can trace each
/// token to its rows, and usable once, so that a call re-sent after a crash
/// cannot pay twice.
contract Settlement {
    using SafeERC20 for IERC20;

    IERC20 public immutable token;
    address public immutable operator;

    /// Anchors already used by a collect or a payout.
    mapping(bytes32 => bool) public used;

    event Collected(address indexed payer, uint256 amount, bytes32 indexed anchor);
    event Paid(address indexed beneficiary, uint256 amount, bytes32 indexed anchor);

    error NotOperator(address caller);
    error AnchorUsed(bytes32 anchor);
    error LengthMismatch(uint256 beneficiaries, uint256 amounts);
    error EmptyPayout();

    constructor(IERC20 token_, address operator_) {
        token = token_;
        operator = operator_;
    }

    modifier onlyOperator() {
        if (msg.sender != operator) revert NotOperator(msg.sender);
        _;
    }

    function _use(bytes32 anchor) private {
        if (used[anchor]) revert AnchorUsed(anchor);
        used[anchor] = true;
    }

    /// Pulls `amount` from `payer` (who approved this contract).
    function collect(address payer, uint256 amount, bytes32 anchor) external onlyOperator {
        _use(anchor);
        token.safeTransferFrom(payer, address(this), amount);
        emit Collected(payer, amount, anchor);
    }

    /// Pays `amounts[i]` to `beneficiaries[i]`, all from this contract's
    /// balance, under one anchor. The caller keeps a batch under the block
    /// gas limit.
    function payout(address[] calldata beneficiaries, uint256[] calldata amounts, bytes32 anchor)
        external
        onlyOperator
    {
        if (beneficiaries.length != amounts.length) {
            revert LengthMismatch(beneficiaries.length, amounts.length);
        }
        if (beneficiaries.length == 0) revert EmptyPayout();
        _use(anchor);
        for (uint256 i = 0; i < beneficiaries.length; i++) {
            token.safeTransfer(beneficiaries[i], amounts[i]);
            emit Paid(beneficiaries[i], amounts[i], anchor);
        }
    }
}
