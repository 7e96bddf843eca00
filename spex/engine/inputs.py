"""Input validation at the edges of the library: masks, values, budgets.

Errors say what was wrong, where (which rows), and what to do instead, so a user never has to read
a stack trace to fix their input.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spex.errors import SpexInputError

EXACT_MAX_N = 20
"""Up to this n, a budget covering all 2^n masks takes exactly those (the exact spectrum): the budget
check knows it, so it is defined here and :mod:`spex.engine.exact` imports it."""

__all__ = ["EXACT_MAX_N", "SpexInputError", "check_budget", "check_masks", "check_n", "check_values", "max_budget", "memory_bytes",
           "over_memory"]



def check_masks(masks: object, n: int) -> np.ndarray:
    """Return masks as a C-contiguous bool array (B, n), or raise a clear error."""
    arr = np.asarray(masks)
    if arr.ndim == 1 and n == arr.shape[0]:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise SpexInputError(f"masks must be a 2-D array (B, n={n}); got shape {arr.shape}; fix: pass one row "
                             f"of {n} bools per mask", field="masks")
    if arr.shape[1] != n:
        raise SpexInputError(f"masks have width {arr.shape[1]} but the function has n={n} features; fix: pass masks "
                             f"of shape (B, {n}), one column per feature", field="masks")
    if arr.dtype == bool:
        return np.ascontiguousarray(arr)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise SpexInputError(f"masks must be bool (or 0/1 numbers); got dtype {arr.dtype}; fix: pass a bool array "
                             f"(True keeps the feature)", field="masks")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise SpexInputError(
            f"masks must be bool or 0/1; {len(rows)} rows hold other values (first rows: {rows[:5].tolist()}); "
            f"fix: pass a bool array (True keeps the feature)", field="masks"
        )
    return np.ascontiguousarray(arr.astype(bool))


def check_values(values: object, count: int, *, source: str = "value_fn") -> np.ndarray:
    """Return values as float64 (count,), or raise naming the wrong shape or the non-finite rows."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SpexInputError(f"{source} must return numbers; got {type(values).__name__}: "
                             f"{' '.join(str(exc).split())}; fix: return a float array of shape ({count},)",
                             field="values") from None
    if arr.shape != (count,):
        if arr.size == count and arr.ndim == 2 and 1 in arr.shape:
            arr = arr.reshape(count)
        else:
            raise SpexInputError(f"{source} returned shape {arr.shape} for {count} masks; expected ({count},); fix: "
                                 f"return one float per mask row", field="values")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise SpexInputError(
            f"{source} returned {len(rows)} non-finite values (NaN/inf) for {count} masks; "
            f"rows {rows[:10].tolist()}{' ...' if len(rows) > 10 else ''}; fix: return finite numbers (clip "
            f"log-probs, replace NaN by a sentinel value the function defines)", field="values"
        )
    return arr


def check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
        raise SpexInputError(f"n must be a positive integer number of features; got {n!r}; fix: pass n >= 1",
                             field="n")
    return int(n)


def memory_bytes() -> int | None:
    """This machine's memory as a process here can use it: the physical memory, or the container's
    cgroup limit where that is lower (None where neither can be read)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = int(Path(limit_file).read_text().strip())
        except (OSError, ValueError):  # absent, or "max"
            continue
        total = limit if total is None else min(total, limit)
    return total


def max_budget(per_mask: int) -> int | None:
    """The largest budget whose masks fit in this machine's memory, at ``per_mask`` bytes a mask (the
    method's :meth:`~spex.engine.methods.base.Method.bytes_per_mask`; None: memory unknown).

    A method draws and keeps all its masks at once, so a budget of 10^12 is a MemoryError after the
    audit has been opened, not an audit."""
    memory = memory_bytes()
    return None if memory is None else max(1, memory // max(1, per_mask))


def fmt_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} PiB"


def over_memory(budget: int, n: int, per_mask: int) -> str | None:
    """Why ``budget`` masks at n features do not fit in memory (None: they fit, or memory is unknown)."""
    largest = max_budget(per_mask)
    if largest is None or budget <= largest:
        return None
    return (f"{budget} masks at n={n} features need about {fmt_bytes(budget * per_mask)} of memory, more than this "
            f"machine's {fmt_bytes(memory_bytes() or 0)}; the largest budget that fits is {largest}")


def check_budget(budget: object, minimum: int, *, method: str, n: int, per_mask: int | None = None) -> int:
    """A whole budget of at least ``minimum`` masks that (given the method's ``per_mask`` bytes) fits in memory."""
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise SpexInputError(f"budget must be an integer number of masks; got {budget!r}; fix: pass a positive "
                             f"integer", field="budget")
    if int(budget) < minimum:
        raise SpexInputError(
            f"budget {int(budget)} is below the minimum of {minimum} masks for method {method!r} at n={n}; "
            f"fix: raise the budget to at least {minimum}", field="budget"
        )
    exact = n <= EXACT_MAX_N and (1 << n) <= int(budget)  # only the 2^n masks are drawn, whatever the budget
    too_big = over_memory(int(budget), n, per_mask) if per_mask is not None and not exact else None
    if too_big is not None:
        raise SpexInputError(f"budget: {too_big}; fix: lower the budget to at most {max_budget(per_mask)}",
                             field="budget")
    return int(budget)
