// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import "./UniswapInterfaces.sol";

/// @title SplitSwap: one routed order, split across Uniswap V2 pairs and V3 pools, in one
/// atomic call.
/// @notice The caller (the book) sells exactly `amountIn` of `tokenIn`, split into `legs`
/// whose amounts sum to it, and receives every leg's output of `tokenOut` itself. The
/// input is drawn from the caller with `transferFrom` (the book approves this contract
/// once): a V2 pair is paid before its `swap`, its output computed from `getReserves` as
/// `UniswapV2Library.getAmountOut` (0.3% fee); a V3 pool is paid in
/// `uniswapV3SwapCallback`, only the pool being swapped at that moment (held in transient
/// storage), and must take the whole leg (the price limit is the end of the range). The
/// output is what the caller's `tokenOut` balance grew by; below `minAmountOut` the whole
/// call reverts. No owner, no storage, no tokens held between calls.
contract SplitSwap {
    struct Leg {
        address pool;
        bool v3;
        uint256 amountIn;
    }

    /// @notice One routed order executed: `amountIn` of `tokenIn` paid by `payer` for
    /// `amountOut` of `tokenOut` (raw units); `orderId` is the order's id.
    event Routed(
        bytes32 indexed orderId,
        address indexed payer,
        address tokenIn,
        address tokenOut,
        uint256 amountIn,
        uint256 amountOut
    );

    uint160 private constant MIN_SQRT_RATIO_PLUS_ONE = 4295128740;
    uint160 private constant MAX_SQRT_RATIO_MINUS_ONE = 1461446703485210103287273052203988822378723970341;

    address private transient _pool;
    address private transient _payer;
    address private transient _tokenIn;

    /// @notice Sell `amountIn` of `tokenIn` for `tokenOut` across `legs`, for at least
    /// `minAmountOut`; the output received.
    function swap(
        bytes32 orderId,
        address tokenIn,
        address tokenOut,
        uint256 amountIn,
        uint256 minAmountOut,
        Leg[] calldata legs
    ) external returns (uint256 amountOut) {
        require(_payer == address(0), "SplitSwap: reentered");
        require(legs.length > 0, "SplitSwap: no legs");
        require(tokenIn != tokenOut, "SplitSwap: tokenIn is tokenOut");
        _payer = msg.sender;
        _tokenIn = tokenIn;
        uint256 before = ITokenCalls(tokenOut).balanceOf(msg.sender);
        uint256 total;
        for (uint256 i = 0; i < legs.length; ++i) {
            Leg calldata leg = legs[i];
            require(leg.amountIn > 0, "SplitSwap: empty leg");
            total += leg.amountIn;
            if (leg.v3) {
                _v3(leg.pool, tokenIn, tokenOut, leg.amountIn);
            } else {
                _v2(leg.pool, tokenIn, tokenOut, leg.amountIn);
            }
        }
        require(total == amountIn, "SplitSwap: legs do not sum to amountIn");
        amountOut = ITokenCalls(tokenOut).balanceOf(msg.sender) - before;
        require(amountOut >= minAmountOut, "SplitSwap: output below minimum");
        _payer = address(0);
        _tokenIn = address(0);
        emit Routed(orderId, msg.sender, tokenIn, tokenOut, amountIn, amountOut);
    }

    function uniswapV3SwapCallback(int256 amount0Delta, int256 amount1Delta, bytes calldata) external {
        require(msg.sender == _pool && _pool != address(0), "SplitSwap: callback from a pool not being swapped");
        int256 owed = amount0Delta > 0 ? amount0Delta : amount1Delta;
        require(owed > 0, "SplitSwap: nothing owed");
        _pull(_tokenIn, msg.sender, uint256(owed));
    }

    function _v2(address pair, address tokenIn, address tokenOut, uint256 amountIn) private {
        bool zeroForOne = _direction(IV2PairCalls(pair).token0(), IV2PairCalls(pair).token1(), tokenIn, tokenOut);
        (uint256 reserve0, uint256 reserve1,) = IV2PairCalls(pair).getReserves();
        (uint256 reserveIn, uint256 reserveOut) = zeroForOne ? (reserve0, reserve1) : (reserve1, reserve0);
        require(reserveIn > 0 && reserveOut > 0, "SplitSwap: V2 pair without liquidity");
        // UniswapV2Library.getAmountOut
        uint256 amountInWithFee = amountIn * 997;
        uint256 out = (amountInWithFee * reserveOut) / (reserveIn * 1000 + amountInWithFee);
        require(out > 0, "SplitSwap: V2 leg pays nothing");
        _pull(tokenIn, pair, amountIn);
        (uint256 out0, uint256 out1) = zeroForOne ? (uint256(0), out) : (out, uint256(0));
        IV2PairCalls(pair).swap(out0, out1, _payer, "");
    }

    function _v3(address pool, address tokenIn, address tokenOut, uint256 amountIn) private {
        bool zeroForOne = _direction(IV3PoolCalls(pool).token0(), IV3PoolCalls(pool).token1(), tokenIn, tokenOut);
        require(amountIn <= uint256(type(int256).max), "SplitSwap: amount too large");
        _pool = pool;
        (int256 amount0, int256 amount1) = IV3PoolCalls(pool).swap(
            _payer,
            zeroForOne,
            int256(amountIn),
            zeroForOne ? MIN_SQRT_RATIO_PLUS_ONE : MAX_SQRT_RATIO_MINUS_ONE,
            ""
        );
        _pool = address(0);
        require(uint256(zeroForOne ? amount0 : amount1) == amountIn, "SplitSwap: V3 pool took less than its leg");
    }

    function _direction(address token0, address token1, address tokenIn, address tokenOut)
        private
        pure
        returns (bool zeroForOne)
    {
        zeroForOne = token0 == tokenIn;
        require(
            zeroForOne ? token1 == tokenOut : (token1 == tokenIn && token0 == tokenOut),
            "SplitSwap: pool does not trade tokenIn for tokenOut"
        );
    }

    function _pull(address token, address to, uint256 amount) private {
        require(ITokenCalls(token).transferFrom(_payer, to, amount), "SplitSwap: transfer failed");
    }
}
