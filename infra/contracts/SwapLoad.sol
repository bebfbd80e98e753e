// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import "./UniswapInterfaces.sol";

/// @title SwapLoad: many real Swap logs in one transaction, for load tests.
/// @notice `swaps` trades back and forth on a real Uniswap V3 pool: swap i sells `amount0`
/// of token0 when i is even, and sells back the token1 that swap bought when i is odd, so
/// the price stays where it was (less the fees). Each swap is the pool's own, and so is
/// each of its Swap logs. This contract pays the pool in `uniswapV3SwapCallback` from its
/// own balances (mint test tokens to it first) and receives the outputs itself; a callback
/// is paid only to the pool being called (held in transient storage).
contract SwapLoad {
    uint160 private constant MIN_SQRT_RATIO_PLUS_1 = 4295128740;
    uint160 private constant MAX_SQRT_RATIO_MINUS_1 = 1461446703485210103287273052203988822378723970341;

    address private transient _pool;

    /// @notice Swap `n` times on `pool`, alternating as above.
    function swaps(address pool, uint256 n, uint256 amount0) external {
        require(_pool == address(0), "SwapLoad: reentered");
        _pool = pool;
        int256 bought1 = 0;
        for (uint256 i = 0; i < n; i++) {
            if (i % 2 == 0) {
                (, int256 amount1) =
                    IV3PoolCalls(pool).swap(address(this), true, int256(amount0), MIN_SQRT_RATIO_PLUS_1, "");
                bought1 = -amount1;
            } else {
                IV3PoolCalls(pool).swap(address(this), false, bought1, MAX_SQRT_RATIO_MINUS_1, "");
            }
        }
        _pool = address(0);
    }

    function uniswapV3SwapCallback(int256 amount0Delta, int256 amount1Delta, bytes calldata) external {
        require(msg.sender == _pool, "SwapLoad: callback from a pool not called");
        if (amount0Delta > 0) _pay(IV3PoolCalls(msg.sender).token0(), uint256(amount0Delta));
        if (amount1Delta > 0) _pay(IV3PoolCalls(msg.sender).token1(), uint256(amount1Delta));
    }

    function _pay(address token, uint256 amount) private {
        require(ITokenCalls(token).transfer(msg.sender, amount), "SwapLoad: transfer failed");
    }
}
