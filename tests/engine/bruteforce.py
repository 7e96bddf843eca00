"""Reference definitions by enumeration (n <= 10), written from the textbook definitions of each
quantity and independent of spex's formulas, so the tests compare two derivations."""

from __future__ import annotations

import itertools
import math

import numpy as np


def subsets(items, max_size=None):
    items = tuple(items)
    top = len(items) if max_size is None else min(max_size, len(items))
    for r in range(top + 1):
        yield from itertools.combinations(items, r)


def table_value(table: np.ndarray, s) -> float:
    return float(table[sum(1 << i for i in s)])


def fourier(table: np.ndarray, n: int) -> dict:
    out = {}
    for k in subsets(range(n)):
        total = 0.0
        for code in range(1 << n):
            parity = sum((code >> i) & 1 for i in k) % 2
            total += table[code] * (-1) ** parity
        out[k] = total / (1 << n)
    return out


def mobius(table, n):
    return {t: sum((-1) ** (len(t) - len(l)) * table_value(table, l) for l in subsets(t)) for t in subsets(range(n))}


def discrete_derivative(table, t, s):
    return sum((-1) ** (len(t) - len(l)) * table_value(table, tuple(s) + l) for l in subsets(t))


def banzhaf(table, n):
    out = {}
    for t in subsets(range(n)):
        rest = [i for i in range(n) if i not in t]
        out[t] = sum(discrete_derivative(table, t, s) for s in subsets(rest)) / 2 ** len(rest)
    return out


def sii(table, n, max_order):
    out = {}
    for t in subsets(range(n), max_order):
        rest = [i for i in range(n) if i not in t]
        total = 0.0
        for s in subsets(rest):
            w = math.factorial(n - len(s) - len(t)) * math.factorial(len(s)) / math.factorial(n - len(t) + 1)
            total += w * discrete_derivative(table, t, s)
        out[t] = total
    return out


def shapley(table, n):
    return np.array([sii(table, n, 1)[(i,)] for i in range(n)])


def stii(table, n, order):
    a = mobius(table, n)
    out = {}
    for t in subsets(range(n), order):
        if len(t) < order:
            out[t] = a[t]
        else:
            rest = [i for i in range(n) if i not in t]
            out[t] = order / n * sum(
                discrete_derivative(table, t, s) / math.comb(n - 1, len(s)) for s in subsets(rest)
            )
    return out


def _weighted_lsq(table, n, order, weights):
    terms = list(subsets(range(n), order))
    rows = list(subsets(range(n)))
    design = np.array([[1.0 if set(t) <= set(s) else 0.0 for t in terms] for s in rows])
    y = np.array([table_value(table, s) for s in rows])
    w = np.sqrt(np.array([weights(len(s)) for s in rows]))
    beta, *_ = np.linalg.lstsq(design * w[:, None], y * w, rcond=None)
    return dict(zip(terms, beta))


def fbii(table, n, order):
    """Faith-Banzhaf: least squares over all masks with uniform weights."""
    return _weighted_lsq(table, n, order, lambda size: 1.0)


def fsii(table, n, order):
    """Faith-Shapley: least squares with the Shapley kernel; the empty and full sets held fixed
    (approximated by a very large weight)."""

    def kernel(size):
        if size in (0, n):
            return 1e9
        return (n - 1) / (math.comb(n, size) * size * (n - size))

    return _weighted_lsq(table, n, order, kernel)
