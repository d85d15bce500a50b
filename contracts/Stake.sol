// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

/// @title Providers' stake.
/// @notice A provider deposits stake; the broker's operator key slashes it
/// for a proven cheat, naming the evidence (the proof's sha256), and the
/// slashed tokens go to the operator. A withdrawal waits `unbondingDelay`
/// seconds, and stake that is unbonding can still be slashed, so that a
/// cheat cannot run with its stake.
contract Stake {
    using SafeERC20 for IERC20;

    IERC20 public immutable token;
    address public immutable operator;
    uint64 public immutable unbondingDelay;

    /// Stake bonded, by provider.
    mapping(address => uint256) public staked;

    struct Unbonding {
        uint256 amount;
        uint64 readyAt;
    }

    /// Stake waiting out its delay, by provider.
    mapping(address => Unbonding) public unbonding;

    event Deposited(address indexed provider, uint256 amount);
    event Slashed(address indexed provider, uint256 amount, bytes32 evidence);
    event UnbondingStarted(address indexed provider, uint256 amount, uint64 readyAt);
    event Withdrawn(address indexed provider, uint256 amount);

    error NotOperator(address caller);
    error ZeroAmount();
    error InsufficientStake(uint256 have, uint256 want);
    error NothingUnbonding();
    error StillBonded(uint64 readyAt);

    constructor(IERC20 token_, address operator_, uint64 unbondingDelay_) {
        token = token_;
        operator = operator_;
        unbondingDelay = unbondingDelay_;
    }

    /// Bonds `amount` of the caller's tokens (approved to this contract).
    function deposit(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        token.safeTransferFrom(msg.sender, address(this), amount);
        staked[msg.sender] += amount;
        emit Deposited(msg.sender, amount);
    }

    /// Starts unbonding `amount`; the delay restarts for everything
    /// unbonding.
    function requestWithdrawal(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        uint256 have = staked[msg.sender];
        if (have < amount) revert InsufficientStake(have, amount);
        staked[msg.sender] = have - amount;
        Unbonding storage u = unbonding[msg.sender];
        u.amount += amount;
        u.readyAt = uint64(block.timestamp) + unbondingDelay;
        emit UnbondingStarted(msg.sender, u.amount, u.readyAt);
    }

    /// Pays out what has waited out its delay.
    function withdraw() external {
        Unbonding memory u = unbonding[msg.sender];
        if (u.amount == 0) revert NothingUnbonding();
        if (block.timestamp < u.readyAt) revert StillBonded(u.readyAt);
        delete unbonding[msg.sender];
        token.safeTransfer(msg.sender, u.amount);
        emit Withdrawn(msg.sender, u.amount);
    }

    /// What `provider` could lose: bonded and unbonding stake.
    function slashable(address provider) public view returns (uint256) {
        return staked[provider] + unbonding[provider].amount;
    }

    /// Takes `amount` of `provider`'s stake (bonded first, then unbonding)
    /// to the operator, for the cheat proved by `evidence`.
    function slash(address provider, uint256 amount, bytes32 evidence) external {
        if (msg.sender != operator) revert NotOperator(msg.sender);
        if (amount == 0) revert ZeroAmount();
        uint256 have = slashable(provider);
        if (have < amount) revert InsufficientStake(have, amount);
        uint256 fromBonded = amount <= staked[provider] ? amount : staked[provider];
        staked[provider] -= fromBonded;
        unbonding[provider].amount -= amount - fromBonded;
        token.safeTransfer(operator, amount);
        emit Slashed(provider, amount, evidence);
    }
}
