// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

/// @title A broker's hub wallet (the SONM seed's): a bond a provider can
/// check before it joins.
/// @notice The hub (a broker's operator) funds the wallet, registers it
/// (freezing `bond`), and pays its providers from it. Each payout locks
/// `lockFeePpm` of its amount for the payout period, so a hub that empties
/// the wallet "as payouts" leaves that share (and the bond) behind. At the
/// period's end `payday` pays `paydayFeePpm` of what is locked to the DAO
/// and unlocks the rest (the wallet goes Idle: the hub may withdraw or
/// register again). A payday later than `paydayGrace` after the period's
/// end is a missed payday, for all to see.
///
/// The DAO alone may suspect a Registered hub (freezing every token), and
/// then rehabilitate it (Idle) at any time, or, once `suspectPeriod` has
/// passed, ban it: the wallet is Punished for good and its tokens are
/// expropriated to the DAO, which may claim them only after
/// `daoFreezePeriod` (so that expropriating is no windfall).
contract HubWallet {
    using SafeERC20 for IERC20;

    enum Phase {
        Created,
        Registered,
        Idle,
        Suspected,
        Punished
    }

    IERC20 public immutable token;
    address public immutable hub;
    address public immutable dao;
    uint32 public immutable lockFeePpm;
    uint32 public immutable paydayFeePpm;
    uint64 public immutable payoutPeriod;
    uint64 public immutable paydayGrace;
    uint64 public immutable suspectPeriod;
    uint64 public immutable daoFreezePeriod;

    Phase public phase;
    /// Frozen at registration.
    uint256 public bond;
    /// The lock fees of this period's payouts.
    uint256 public locked;
    uint64 public registeredAt;
    uint64 public suspectedAt;
    uint64 public bannedAt;
    /// Paydays made, and those made after their grace.
    uint32 public paydays;
    uint32 public missedPaydays;

    event Registered(uint256 bond, uint64 at);
    event Paid(address indexed to, uint256 amount, uint256 locked);
    event PayDay(uint256 daoFee, bool late, uint64 at);
    event Withdrawn(uint256 amount);
    event Suspected(uint64 at);
    event Rehabilitated(uint64 at);
    event Banned(uint256 amount, uint64 at);
    event Claimed(uint256 amount);

    error NotHub(address caller);
    error NotDao(address caller);
    error WrongPhase(Phase phase);
    error ZeroAmount();
    error InsufficientFunds(uint256 balance, uint256 needed);
    error TooEarly(uint64 readyAt);
    error FeeTooLarge(uint32 ppm);

    constructor(
        IERC20 token_,
        address hub_,
        address dao_,
        uint32 lockFeePpm_,
        uint32 paydayFeePpm_,
        uint64 payoutPeriod_,
        uint64 paydayGrace_,
        uint64 suspectPeriod_,
        uint64 daoFreezePeriod_
    ) {
        if (lockFeePpm_ > 1_000_000) revert FeeTooLarge(lockFeePpm_);
        if (paydayFeePpm_ > 1_000_000) revert FeeTooLarge(paydayFeePpm_);
        token = token_;
        hub = hub_;
        dao = dao_;
        lockFeePpm = lockFeePpm_;
        paydayFeePpm = paydayFeePpm_;
        payoutPeriod = payoutPeriod_;
        paydayGrace = paydayGrace_;
        suspectPeriod = suspectPeriod_;
        daoFreezePeriod = daoFreezePeriod_;
    }

    modifier onlyHub() {
        if (msg.sender != hub) revert NotHub(msg.sender);
        _;
    }

    modifier onlyDao() {
        if (msg.sender != dao) revert NotDao(msg.sender);
        _;
    }

    modifier inPhase(Phase want) {
        if (phase != want) revert WrongPhase(phase);
        _;
    }

    function _now() private view returns (uint64) {
        return uint64(block.timestamp);
    }

    function _balance() private view returns (uint256) {
        return token.balanceOf(address(this));
    }

    /// Freezes `bond_` of the wallet's balance and opens a payout period
    /// (from Created, or again from Idle).
    function register(uint256 bond_) external onlyHub {
        if (phase != Phase.Created && phase != Phase.Idle) revert WrongPhase(phase);
        if (bond_ == 0) revert ZeroAmount();
        uint256 balance = _balance();
        if (balance < bond_) revert InsufficientFunds(balance, bond_);
        bond = bond_;
        locked = 0;
        registeredAt = _now();
        phase = Phase.Registered;
        emit Registered(bond_, registeredAt);
    }

    /// Pays a provider `amount`, locking `lockFeePpm` of it until payday;
    /// refused if the balance would not cover the bond and every lock.
    function transfer(address to, uint256 amount) external onlyHub inPhase(Phase.Registered) {
        if (amount == 0) revert ZeroAmount();
        uint256 fee = (amount * lockFeePpm) / 1_000_000;
        uint256 needed = bond + locked + fee + amount;
        uint256 balance = _balance();
        if (balance < needed) revert InsufficientFunds(balance, needed);
        locked += fee;
        token.safeTransfer(to, amount);
        emit Paid(to, amount, locked);
    }

    /// When the payout period is over: `paydayFeePpm` of the bond and the
    /// locks to the DAO, the rest unlocked; the wallet goes Idle.
    function payday() external onlyHub inPhase(Phase.Registered) {
        uint64 due = registeredAt + payoutPeriod;
        if (_now() < due) revert TooEarly(due);
        bool late = _now() > due + paydayGrace;
        uint256 fee = ((bond + locked) * paydayFeePpm) / 1_000_000;
        bond = 0;
        locked = 0;
        phase = Phase.Idle;
        paydays += 1;
        if (late) missedPaydays += 1;
        if (fee > 0) token.safeTransfer(dao, fee);
        emit PayDay(fee, late, _now());
    }

    /// Idle: the hub takes `amount` back.
    function withdraw(uint256 amount) external onlyHub inPhase(Phase.Idle) {
        if (amount == 0) revert ZeroAmount();
        uint256 balance = _balance();
        if (balance < amount) revert InsufficientFunds(balance, amount);
        token.safeTransfer(hub, amount);
        emit Withdrawn(amount);
    }

    /// The DAO suspects a Registered hub: every token is frozen.
    function suspect() external onlyDao inPhase(Phase.Registered) {
        suspectedAt = _now();
        phase = Phase.Suspected;
        emit Suspected(suspectedAt);
    }

    /// The DAO clears a suspected hub: nothing frozen, Idle.
    function rehabilitate() external onlyDao inPhase(Phase.Suspected) {
        bond = 0;
        locked = 0;
        phase = Phase.Idle;
        emit Rehabilitated(_now());
    }

    /// After the suspect period, the DAO bans the hub for good: its tokens
    /// are the DAO's, claimable after the DAO freeze.
    function ban() external onlyDao inPhase(Phase.Suspected) {
        uint64 ready = suspectedAt + suspectPeriod;
        if (_now() < ready) revert TooEarly(ready);
        bannedAt = _now();
        phase = Phase.Punished;
        emit Banned(_balance(), bannedAt);
    }

    /// The DAO takes a banned hub's tokens once the freeze is over.
    function claim() external onlyDao inPhase(Phase.Punished) {
        uint64 ready = bannedAt + daoFreezePeriod;
        if (_now() < ready) revert TooEarly(ready);
        uint256 amount = _balance();
        if (amount == 0) revert ZeroAmount();
        token.safeTransfer(dao, amount);
        emit Claimed(amount);
    }

    /// Whether the current payout period's payday is overdue (past its
    /// grace and not made).
    function paydayOverdue() external view returns (bool) {
        return phase == Phase.Registered && _now() > registeredAt + payoutPeriod + paydayGrace;
    }
}
