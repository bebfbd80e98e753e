"""Full portfolio-margin reprice of 100k accounts over 500 instruments (``make bench``).

One reprice is what one oracle tick costs a shard: every instrument's value, Greeks and
P&L under every scenario (full Black-76), the haircut collateral, then equity, portfolio
and standard margin, IM and health of every account from sparse products. Prints the
median of several runs. Target: <= 100 ms in one process, no Python per account.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp

from operators.margin import (
    AccountRisk,
    Instruments,
    MarginParams,
    collateral_value,
    instrument_values,
    reprice,
)
from operators.units import InstrumentKind

UNDERLYINGS = 5
EXPIRY_DAYS = (1, 7, 14, 30, 60, 90, 180)
MONEYNESS = (0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2)
SPOTS = np.array([3000.0, 60_000.0, 150.0, 0.6, 15.0])
TOKENS = ("USDC", "ETH", "BTC")


def instruments() -> Instruments:
    """Per underlying: spot, perp, and calls and puts on 7 strikes x 7 expiries (500 in all)."""
    kind, underlying, strike, expiry = [], [], [], []
    for u in range(UNDERLYINGS):
        rows = [(InstrumentKind.SPOT, 0.0, 0.0), (InstrumentKind.PERP, 0.0, 0.0)] + [
            (k, m * SPOTS[u], d / 365)
            for d in EXPIRY_DAYS
            for m in MONEYNESS
            for k in (InstrumentKind.CALL, InstrumentKind.PUT)
        ]
        for k, K, T in rows:
            kind.append(k)
            underlying.append(u)
            strike.append(K)
            expiry.append(T)
    return Instruments(kind=kind, underlying=underlying, strike=strike, expiry_years=expiry)


def token_prices(spot: np.ndarray) -> np.ndarray:
    """USD prices of ``TOKENS``: USDC at par, ETH and BTC at their underlyings' spot."""
    return np.array([1.0, spot[0], spot[1]])


def book(
    rng: np.random.Generator, accounts: int, n_instruments: int, per_account: int
) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """Random positions (about ``per_account`` each), collateral and costs."""
    rows = np.repeat(np.arange(accounts), per_account)
    cols = rng.integers(0, n_instruments, rows.size)
    sizes = np.round(rng.normal(0.0, 2.0, rows.size), 3)
    positions = sp.csr_matrix((sizes, (rows, cols)), shape=(accounts, n_instruments))
    positions.sum_duplicates()
    positions.eliminate_zeros()
    holders = np.repeat(np.arange(accounts), 2)
    tokens = rng.integers(0, len(TOKENS), holders.size)
    usd = rng.uniform(0.0, 10_000.0, holders.size)
    amounts = sp.csr_matrix(
        (usd / token_prices(SPOTS)[tokens], (holders, tokens)), shape=(accounts, len(TOKENS))
    )
    amounts.sum_duplicates()
    return positions, amounts, rng.normal(0.0, 1_000.0, accounts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--positions", type=int, default=10, help="positions per account")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()

    rng = np.random.default_rng(1)
    inst = instruments()
    params = MarginParams()
    positions, amounts, cost = book(rng, args.accounts, inst.n, args.positions)
    portfolio_margined = np.ones(args.accounts, dtype=bool)
    haircut = params.haircut_vector(TOKENS)
    n_scenarios = len(params.portfolio.scenarios()[0])

    def tick(shift: float) -> tuple[AccountRisk, float, float]:
        spot = SPOTS * (1.0 + shift)
        vol = rng.uniform(0.4, 0.9, inst.n)
        atm = rng.uniform(0.5, 1.0, UNDERLYINGS)
        started = time.perf_counter()
        risk = instrument_values(inst, spot, vol, atm, params)
        per_instrument = time.perf_counter()
        collateral = collateral_value(amounts, token_prices(spot), haircut)
        out = reprice(positions, cost, collateral, risk, params, portfolio_margined)
        done = time.perf_counter()
        return out, per_instrument - started, done - started

    tick(0.0)  # warm up
    runs = [tick(0.001 * i) for i in range(args.runs)]
    instrument_s = float(np.median([r[1] for r in runs]))
    total_s = float(np.median([r[2] for r in runs]))
    out = runs[-1][0]
    print(
        f"{args.accounts:,} accounts x {inst.n} instruments, {positions.nnz:,} positions "
        f"({positions.nnz / args.accounts:.1f} per account), {n_scenarios} scenarios"
    )
    print(f"  per-instrument values, Greeks, scenario P&L: {instrument_s * 1e3:7.1f} ms")
    print(
        f"  full reprice (all of it, median of {args.runs}): {total_s * 1e3:7.1f} ms"
        " (target <= 100 ms)"
    )
    print(f"  accounts below MM in this random book: {int((out.health < 1).sum()):,}")


if __name__ == "__main__":
    main()
