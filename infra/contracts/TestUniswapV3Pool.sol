// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title TestUniswapV3Pool: emits Uniswap V3's real Swap event at prices set by the caller.
/// @notice No liquidity math: `swap` stores and emits what it is given. The caller computes
/// sqrtPriceX96 (sqrt(token1 per token0, smallest units) * 2**96) and the tick.
contract TestUniswapV3Pool {
    event Swap(
        address indexed sender,
        address indexed recipient,
        int256 amount0,
        int256 amount1,
        uint160 sqrtPriceX96,
        uint128 liquidity,
        int24 tick
    );

    uint160 public sqrtPriceX96;
    uint128 public liquidity;
    int24 public tick;

    function swap(
        int256 amount0,
        int256 amount1,
        uint160 sqrtPriceX96_,
        uint128 liquidity_,
        int24 tick_
    ) external {
        sqrtPriceX96 = sqrtPriceX96_;
        liquidity = liquidity_;
        tick = tick_;
        emit Swap(msg.sender, msg.sender, amount0, amount1, sqrtPriceX96_, liquidity_, tick_);
    }

    /// @notice Emit `n` Swap logs in one transaction (for load tests); log i carries
    /// sqrtPriceX96_ + i. The pool is left at the last one.
    function emitSwaps(
        uint256 n,
        int256 amount0,
        int256 amount1,
        uint160 sqrtPriceX96_,
        uint128 liquidity_,
        int24 tick_
    ) external {
        for (uint256 i = 0; i < n; i++) {
            emit Swap(
                msg.sender, msg.sender, amount0, amount1, sqrtPriceX96_ + uint160(i), liquidity_, tick_
            );
        }
        if (n > 0) {
            sqrtPriceX96 = sqrtPriceX96_ + uint160(n - 1);
            liquidity = liquidity_;
            tick = tick_;
        }
    }
}
