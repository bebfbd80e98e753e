"""The exactly-once checker: what the chain alone shows about a signer's orders.

Anchor: Jepsen's checkers (an operation is neither lost nor duplicated), read over the
history the chain keeps. The order id travels on chain (the venue's ``Trade`` and
``Liquidated`` events and SplitSwap's ``Routed`` carry it), so the history is the
signer's transactions, each with the order ids its events carry (``connectors.chain_audit``
reads them). The violations:

- ``duplicate``: an order id carried by more than one event of successful transactions (a
  reverted transaction emits no event, so it executed nothing);
- ``unknown``: an order id on chain that is not one of the expected orders;
- ``nonce``: the signer's nonces are not exactly ``first_nonce, first_nonce + 1, ...``
  (a gap, a repeat, or one below ``first_nonce``).

That every expected order reached a final outcome is the executor's record to show (an
order may be refused before any transaction), so it is not checked here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import msgspec


class ChainTx(msgspec.Struct, frozen=True, kw_only=True):
    """One mined transaction: its hash, sender and nonce, its block, its receipt's status
    (1 success, 0 reverted), and the order id of its venue event (None: it emitted none).

    ``more_order_ids`` holds the order ids of any further venue events of the same
    transaction (a call of the venue emits one; a contract calling it may emit more)."""

    hash: str
    sender: str
    nonce: int
    block_number: int
    status: int
    order_id: str | None
    more_order_ids: tuple[str, ...] = ()

    @property
    def order_ids(self) -> tuple[str, ...]:
        """Every order id the transaction's events carry."""
        return (() if self.order_id is None else (self.order_id,)) + self.more_order_ids


def audit(
    txs: Sequence[ChainTx], order_ids: Iterable[str], signer: str, first_nonce: int = 0
) -> list[str]:
    """The violations in ``txs`` as sentences, ``[]`` for a clean history: duplicated and
    unknown order ids (sorted by id), then the gaps and repeats of ``signer``'s nonces
    counted from ``first_nonce``. Addresses and ids compare case-insensitively."""
    expected = {order_id.lower() for order_id in order_ids}
    where: defaultdict[str, list[ChainTx]] = defaultdict(list)
    for tx in txs:
        if tx.status == 1:
            for order_id in tx.order_ids:
                where[order_id.lower()].append(tx)
    violations = []
    for order_id in sorted(where):
        seen = where[order_id]
        if len(seen) > 1:
            places = ", ".join(f"{tx.hash} (block {tx.block_number})" for tx in seen)
            violations.append(
                f"duplicate: order {order_id} executed {len(seen)} times, in {places}"
            )
    for order_id in sorted(where.keys() - expected):
        tx = where[order_id][0]
        violations.append(
            f"unknown: order {order_id} executed in {tx.hash} (block {tx.block_number}) is "
            f"not an expected order"
        )
    violations.extend(_nonce_violations(txs, signer.lower(), first_nonce))
    return violations


def _nonce_violations(txs: Sequence[ChainTx], signer: str, first_nonce: int) -> list[str]:
    nonces = Counter(tx.nonce for tx in txs if tx.sender.lower() == signer)
    if not nonces:
        return []
    out = []
    below = sorted(n for n in nonces if n < first_nonce)
    if below:
        out.append(f"nonce: {signer} used nonces {below} below the first nonce {first_nonce}")
    repeats = sorted(n for n, count in nonces.items() if count > 1)
    if repeats:
        out.append(f"nonce: {signer} used nonces {repeats} more than once")
    last = max(nonces)
    gaps = [n for n in range(first_nonce, last) if n not in nonces]
    if gaps:
        out.append(
            f"nonce: {signer} skipped nonces {_ranges(gaps)} between {first_nonce} and {last}"
        )
    return out


def _ranges(numbers: list[int]) -> str:
    """Sorted integers as runs: ``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)
