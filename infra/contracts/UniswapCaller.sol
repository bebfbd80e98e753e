// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import "./UniswapInterfaces.sol";

/// @title UniswapCaller: adds liquidity to and swaps on the real Uniswap V2 pairs and V3
/// pools for an account, paying from that account's approved balance.
/// @notice A V3 pool takes its tokens in a callback to msg.sender (`uniswapV3MintCallback`,
/// `uniswapV3SwapCallback`); this contract pays them there with `transferFrom` from the
/// account that called it. A callback is paid only from the pool this contract is calling
/// at that moment (held in transient storage), so no other contract can draw on an
/// approval. A V2 pair is paid before its `swap`/`mint`, in the same transaction. For tests
/// and the dev chain: no deadline and no minimum output.
contract UniswapCaller {
    address private transient _pool;
    address private transient _payer;

    /// @notice Add `liquidity` to `pool` over [tickLower, tickUpper) for msg.sender, who
    /// pays what the pool asks; the amounts of token0 and token1 paid.
    function v3Mint(address pool, int24 tickLower, int24 tickUpper, uint128 liquidity)
        external
        returns (uint256 amount0, uint256 amount1)
    {
        _enter(pool);
        (amount0, amount1) = IV3PoolCalls(pool).mint(msg.sender, tickLower, tickUpper, liquidity, "");
        _pool = address(0);
    }

    /// @notice Swap on `pool` for msg.sender (who pays), sending the output to `recipient`;
    /// the pool's own (amount0, amount1): positive is paid in, negative paid out.
    function v3Swap(
        address pool,
        bool zeroForOne,
        int256 amountSpecified,
        uint160 sqrtPriceLimitX96,
        address recipient
    ) external returns (int256 amount0, int256 amount1) {
        _enter(pool);
        (amount0, amount1) =
            IV3PoolCalls(pool).swap(recipient, zeroForOne, amountSpecified, sqrtPriceLimitX96, "");
        _pool = address(0);
    }

    function uniswapV3MintCallback(uint256 amount0Owed, uint256 amount1Owed, bytes calldata) external {
        require(msg.sender == _pool, "UniswapCaller: callback from a pool not called");
        _pay(IV3PoolCalls(msg.sender).token0(), amount0Owed);
        _pay(IV3PoolCalls(msg.sender).token1(), amount1Owed);
    }

    function uniswapV3SwapCallback(int256 amount0Delta, int256 amount1Delta, bytes calldata) external {
        require(msg.sender == _pool, "UniswapCaller: callback from a pool not called");
        if (amount0Delta > 0) _pay(IV3PoolCalls(msg.sender).token0(), uint256(amount0Delta));
        if (amount1Delta > 0) _pay(IV3PoolCalls(msg.sender).token1(), uint256(amount1Delta));
    }

    /// @notice Deposit amount0 and amount1 into `pair` from msg.sender and mint its LP
    /// tokens to msg.sender; the LP tokens minted.
    function v2Mint(address pair, uint256 amount0, uint256 amount1) external returns (uint256) {
        _pull(IV2PairCalls(pair).token0(), msg.sender, pair, amount0);
        _pull(IV2PairCalls(pair).token1(), msg.sender, pair, amount1);
        return IV2PairCalls(pair).mint(msg.sender);
    }

    /// @notice Pay `amountIn` of the input token into `pair` from msg.sender and take
    /// `amountOut` of the other to `recipient`; the pair reverts ("UniswapV2: K") if
    /// `amountOut` is more than it pays for `amountIn`.
    function v2Swap(address pair, bool zeroForOne, uint256 amountIn, uint256 amountOut, address recipient)
        external
    {
        address tokenIn = zeroForOne ? IV2PairCalls(pair).token0() : IV2PairCalls(pair).token1();
        _pull(tokenIn, msg.sender, pair, amountIn);
        (uint256 out0, uint256 out1) = zeroForOne ? (uint256(0), amountOut) : (amountOut, uint256(0));
        IV2PairCalls(pair).swap(out0, out1, recipient, "");
    }

    function _enter(address pool) private {
        require(_pool == address(0), "UniswapCaller: reentered");
        _pool = pool;
        _payer = msg.sender;
    }

    function _pay(address token, uint256 amount) private {
        if (amount > 0) _pull(token, _payer, msg.sender, amount);
    }

    function _pull(address token, address from, address to, uint256 amount) private {
        require(ITokenCalls(token).transferFrom(from, to, amount), "UniswapCaller: transfer failed");
    }
}
