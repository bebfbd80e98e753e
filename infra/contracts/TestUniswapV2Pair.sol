// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title TestUniswapV2Pair: emits Uniswap V2's real Sync and Swap events.
/// @notice No constant-product math: `swap` moves the reserves to the values given and
/// emits, as a real pair does, Sync with the new reserves and then Swap with the amounts
/// in and out that the move implies.
contract TestUniswapV2Pair {
    event Sync(uint112 reserve0, uint112 reserve1);
    event Swap(
        address indexed sender,
        uint256 amount0In,
        uint256 amount1In,
        uint256 amount0Out,
        uint256 amount1Out,
        address indexed to
    );

    uint112 public reserve0;
    uint112 public reserve1;

    function swap(uint112 reserve0_, uint112 reserve1_, address to) external {
        (uint256 in0, uint256 out0) = _flow(reserve0, reserve0_);
        (uint256 in1, uint256 out1) = _flow(reserve1, reserve1_);
        reserve0 = reserve0_;
        reserve1 = reserve1_;
        emit Sync(reserve0_, reserve1_);
        emit Swap(msg.sender, in0, in1, out0, out1, to);
    }

    function _flow(uint112 before, uint112 next) private pure returns (uint256, uint256) {
        if (next >= before) {
            return (next - before, 0);
        }
        return (0, before - next);
    }
}
