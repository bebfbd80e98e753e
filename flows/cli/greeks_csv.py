"""``hedgeflow greeks IN.csv``: price and Greeks for a CSV of European options.

Input columns (any order, all required, no others): ``kind,model,S,K,T,r,q,sigma``, where
``kind`` is ``call`` or ``put`` and ``model`` is ``bsm`` (``S`` is the spot, ``q`` the
continuous dividend/carry yield) or ``black76`` (``S`` is the forward; ``q`` must be empty or
0). ``T`` in years, rates and vol as annual fractions.

Output: the input columns (their text as given, in the order above), then
``price,delta,gamma,vega,theta,rho`` (units as in ``operators.greeks``: vega per 1.00 vol,
theta per year, rho per 1.00) and ``error``. A row that cannot be priced keeps its input,
gets empty Greeks and the reason in ``error``; the other rows are still priced.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from operators.greeks import Greeks, black76, bsm, validate

INPUT_COLUMNS = ("kind", "model", "S", "K", "T", "r", "q", "sigma")
GREEK_COLUMNS = ("price", "delta", "gamma", "vega", "theta", "rho")
OUTPUT_COLUMNS = (*INPUT_COLUMNS, *GREEK_COLUMNS, "error")
_NUMBERS = ("S", "K", "T", "r", "q", "sigma")
_KINDS = {"call": True, "put": False}
_MODELS = ("bsm", "black76")


def greeks_csv(src: TextIO, dst: TextIO) -> int:
    """Read option rows from ``src``, write them with price, Greeks and ``error`` to ``dst``.

    Returns the number of rows with an error (0 when every row was priced). Raises
    ``ValueError`` when the header lacks a required column or has an unknown one.
    """
    reader = csv.reader(src)
    header = [name.strip() for name in next(reader, [])]
    missing = [c for c in INPUT_COLUMNS if c not in header]
    unknown = [c for c in header if c not in INPUT_COLUMNS]
    if missing or unknown or len(header) != len(INPUT_COLUMNS):
        msg = (
            f"greeks CSV header must be exactly {','.join(INPUT_COLUMNS)} (any order); "
            f"missing {missing}, unknown {unknown}, got {header}"
        )
        raise ValueError(msg)
    position = [header.index(c) for c in INPUT_COLUMNS]

    texts: list[list[str]] = []
    parsed: list[_Row] = []
    for fields in reader:
        if not fields:
            continue
        text = [fields[i] if i < len(fields) else "" for i in position]
        texts.append(text)
        parsed.append(_parse(text, len(fields) == len(header)))

    S, K, T, r, q, sigma = np.array([p.numbers for p in parsed]).reshape(-1, len(_NUMBERS)).T
    checks = validate(S, K, T, r, q, sigma)
    errors = []
    for row, check in zip(parsed, checks, strict=True):
        range_errors = [str(check)] if check and row.readable else []
        errors.append("; ".join([*row.reasons, *range_errors]))
    ok = np.array([not e for e in errors], dtype=bool)
    calls = np.array([p.is_call for p in parsed], dtype=bool)
    model_arr = np.array([p.model for p in parsed], dtype=object)
    out = np.full((len(texts), len(GREEK_COLUMNS)), np.nan)
    rows = ok & (model_arr == "bsm")
    out[rows] = _columns(bsm(calls[rows], S[rows], K[rows], T[rows], r[rows], q[rows], sigma[rows]))
    rows = ok & (model_arr == "black76")
    out[rows] = _columns(black76(calls[rows], S[rows], K[rows], T[rows], r[rows], sigma[rows]))

    writer = csv.writer(dst, lineterminator="\n")
    writer.writerow(OUTPUT_COLUMNS)
    for text, greeks, error in zip(texts, out, errors, strict=True):
        formatted = [""] * len(GREEK_COLUMNS) if error else [_number(x) for x in greeks]
        writer.writerow([*text, *formatted, error])
    return sum(1 for e in errors if e)


@dataclass(frozen=True, kw_only=True)
class _Row:
    """One input row as parsed: numbers in ``_NUMBERS`` order, NaN where not ``readable``."""

    is_call: bool
    model: str
    numbers: list[float]
    reasons: list[str]
    readable: bool


def _parse(text: list[str], complete: bool) -> _Row:
    """Parse one row's fields (in ``INPUT_COLUMNS`` order); unreadable fields give reasons."""
    row = dict(zip(INPUT_COLUMNS, (f.strip() for f in text), strict=True))
    reasons = [] if complete else [f"expected {len(INPUT_COLUMNS)} fields"]
    kind = row["kind"].lower()
    if kind not in _KINDS:
        reasons.append(f"kind must be call or put; got {row['kind']!r}")
    model = row["model"].lower()
    if model not in _MODELS:
        reasons.append(f"model must be bsm or black76; got {row['model']!r}")
    if model == "black76" and not row["q"]:
        row["q"] = "0"  # the forward carries no yield: empty means 0
    numbers = []
    readable = True
    for name in _NUMBERS:
        try:
            numbers.append(float(row[name]))
        except ValueError:
            reasons.append(f"{name} must be a number; got {row[name]!r}")
            numbers.append(np.nan)
            readable = False
    if model == "black76" and numbers[_NUMBERS.index("q")] != 0.0:
        reasons.append(f"q must be empty or 0 for black76 (S is the forward); got {row['q']!r}")
    return _Row(
        is_call=_KINDS.get(kind, True),
        model=model,
        numbers=numbers,
        reasons=reasons,
        readable=readable,
    )


def _columns(g: Greeks) -> np.ndarray:
    """The Greeks as an (n, 6) array in ``GREEK_COLUMNS`` order."""
    return np.column_stack([getattr(g, name) for name in GREEK_COLUMNS])


def _number(x: float) -> str:
    """Shortest text that round-trips the float; ``+ 0.0`` turns IEEE -0.0 into 0.0."""
    return repr(float(x) + 0.0)
