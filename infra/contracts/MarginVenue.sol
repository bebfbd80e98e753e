// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title MarginVenue: a minimal on-chain derivatives venue.
/// @notice It records listings, collateral moves and trades as events, which the streaming
/// risk engine consumes. It checks neither margin nor balances and moves no tokens: the
/// engine checks margin off-chain. Prices and strikes have 18 decimals; sizes are signed
/// (buy > 0), in units of the underlying with 18 decimals; collateral amounts are in the
/// token's smallest unit.
contract MarginVenue {
    uint8 public constant SPOT = 0;
    uint8 public constant PERP = 1;
    uint8 public constant CALL = 2;
    uint8 public constant PUT = 3;

    event InstrumentListed(
        bytes32 indexed id, address indexed underlying, uint8 kind, uint256 strike, uint64 expiry
    );
    event Deposit(address indexed account, address indexed token, uint256 amount);
    event Withdraw(address indexed account, address indexed token, uint256 amount);
    event Trade(
        address indexed account, bytes32 indexed instrument, int256 size, uint256 price, bytes32 orderId
    );
    event Liquidated(
        address indexed account,
        address indexed liquidator,
        bytes32 indexed instrument,
        int256 size,
        uint256 price,
        bytes32 orderId
    );
    event LiquidatorSet(address indexed liquidator, bool allowed);

    address public immutable owner;
    mapping(address => bool) public isLiquidator;
    mapping(bytes32 => bool) public listed;

    /// @param liquidator The first holder of the liquidator role (address(0) for none).
    constructor(address liquidator) {
        owner = msg.sender;
        if (liquidator != address(0)) {
            isLiquidator[liquidator] = true;
            emit LiquidatorSet(liquidator, true);
        }
    }

    modifier onlyOwner() {
        require(msg.sender == owner, "MarginVenue: not the owner");
        _;
    }

    /// @notice The id of an instrument: keccak256 of its ABI-encoded terms.
    function instrumentId(address underlying, uint8 kind, uint256 strike, uint64 expiry)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(underlying, kind, strike, expiry));
    }

    /// @notice List an instrument. Spot and perps have strike 0 and expiry 0; options a
    /// strike > 0 (18 decimals) and an expiry (Unix seconds).
    function list(address underlying, uint8 kind, uint256 strike, uint64 expiry)
        external
        onlyOwner
        returns (bytes32 id)
    {
        require(kind <= PUT, "MarginVenue: unknown kind");
        if (kind <= PERP) {
            require(strike == 0 && expiry == 0, "MarginVenue: spot and perps have no strike");
        } else {
            require(strike > 0 && expiry > 0, "MarginVenue: options need a strike and an expiry");
        }
        id = instrumentId(underlying, kind, strike, expiry);
        require(!listed[id], "MarginVenue: already listed");
        listed[id] = true;
        emit InstrumentListed(id, underlying, kind, strike, expiry);
    }

    function deposit(address token, uint256 amount) external {
        require(amount > 0, "MarginVenue: zero amount");
        emit Deposit(msg.sender, token, amount);
    }

    function withdraw(address token, uint256 amount) external {
        require(amount > 0, "MarginVenue: zero amount");
        emit Withdraw(msg.sender, token, amount);
    }

    /// @notice Trade `size` at `price` for the caller. `orderId` is the id of the order this
    /// trade executes (bytes32(0) for a trade no order drives): it is emitted, so that anyone
    /// can check from the chain alone that no order executed twice.
    function trade(bytes32 instrument, int256 size, uint256 price, bytes32 orderId) external {
        require(listed[instrument], "MarginVenue: not listed");
        require(size != 0 && price > 0, "MarginVenue: zero size or price");
        emit Trade(msg.sender, instrument, size, price, orderId);
    }

    /// @notice Trade `size` for `account` at `price`, against the caller; liquidators only.
    /// `size` is the trade applied to the account: negative closes (part of) a long.
    /// `orderId` is the id of the liquidation order's leg (bytes32(0) for none).
    function liquidate(
        address account,
        bytes32 instrument,
        int256 size,
        uint256 price,
        bytes32 orderId
    ) external {
        require(isLiquidator[msg.sender], "MarginVenue: not a liquidator");
        require(listed[instrument], "MarginVenue: not listed");
        require(size != 0 && price > 0, "MarginVenue: zero size or price");
        emit Liquidated(account, msg.sender, instrument, size, price, orderId);
    }

    function setLiquidator(address liquidator, bool allowed) external onlyOwner {
        isLiquidator[liquidator] = allowed;
        emit LiquidatorSet(liquidator, allowed);
    }
}
