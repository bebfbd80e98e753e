"""A crash that puts 10 % of 100k accounts under maintenance at once (``make bench``).

The book of ``margin_reprice.py`` (100k accounts x 500 instruments, about 10 positions
each); collateral is set so that after a 10 % drop of every underlying exactly
``--share`` of the accounts are below maintenance (health 0.5..0.99). Prints the time of
the reprice at the crash and of sizing every liquidation order at once
(``operators.liquidation.liquidation_orders``). Target: well under a second.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from margin_reprice import SPOTS, UNDERLYINGS, book, instruments

from operators.liquidation import LiquidationParams, liquidation_orders
from operators.margin import MarginParams, instrument_values, reprice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--share", type=float, default=0.10, help="share put under margin")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(2)
    inst = instruments()
    params, liquidation = MarginParams(), LiquidationParams()
    positions, _, cost = book(rng, args.accounts, inst.n, 10)
    vol = rng.uniform(0.4, 0.9, inst.n)
    atm = rng.uniform(0.5, 1.0, UNDERLYINGS)
    crash = instrument_values(inst, SPOTS * 0.9, vol, atm, params)
    portfolio = rng.random(args.accounts) < 0.8  # a fifth on standard margin
    bare = reprice(positions, cost, np.zeros(args.accounts), crash, params, portfolio)
    under = rng.random(args.accounts) < args.share
    health = np.where(under, rng.uniform(0.5, 0.99, args.accounts), 1.5)
    collateral = bare.mm * health - bare.equity  # equity = health x MM after the crash

    times, counts = [], []
    for _ in range(args.runs):
        started = time.perf_counter()
        out = reprice(positions, cost, collateral, crash, params, portfolio)
        below = np.flatnonzero(out.equity < out.mm)
        priced = time.perf_counter()
        orders = liquidation_orders(
            positions[below], out.equity[below], crash, params, liquidation, portfolio[below]
        )
        done = time.perf_counter()
        times.append((priced - started, done - priced))
        counts.append((below.size, sum(len(o.legs) for o in orders if o is not None)))
    reprice_s = float(np.median([t[0] for t in times]))
    sizing_s = float(np.median([t[1] for t in times]))
    accounts, legs = counts[-1]
    print(
        f"crash: {accounts:,} of {args.accounts:,} accounts under maintenance "
        f"({positions[below].nnz:,} positions), {legs:,} liquidation legs"
    )
    print(f"  reprice at the crash:                     {reprice_s * 1e3:7.1f} ms")
    print(f"  sizing every liquidation order at once:   {sizing_s * 1e3:7.1f} ms")
    print(
        f"  total (median of {args.runs}):                   {(reprice_s + sizing_s) * 1e3:7.1f} ms"
        " (target: well under 1 s)"
    )


if __name__ == "__main__":
    main()
