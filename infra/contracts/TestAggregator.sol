// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title TestAggregator: a Chainlink-style aggregator that emits the real AnswerUpdated.
/// @notice `update` starts a new round with the answer given (`decimals` decimals) and
/// emits AnswerUpdated and NewRound, as an OCR aggregator's transmit does.
contract TestAggregator {
    event AnswerUpdated(int256 indexed current, uint256 indexed roundId, uint256 updatedAt);
    event NewRound(uint256 indexed roundId, address indexed startedBy, uint256 startedAt);

    uint8 public immutable decimals;
    int256 public latestAnswer;
    uint256 public latestRound;
    uint256 public latestTimestamp;

    constructor(uint8 decimals_) {
        decimals = decimals_;
    }

    function update(int256 answer) external {
        latestRound += 1;
        latestAnswer = answer;
        latestTimestamp = block.timestamp;
        emit AnswerUpdated(answer, latestRound, block.timestamp);
        emit NewRound(latestRound, msg.sender, block.timestamp);
    }
}
