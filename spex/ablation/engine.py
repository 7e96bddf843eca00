"""The ablation engine: runs a value function on masks, computing only what the store lacks.

Every method in spex asks for values as a plain callable ``f(masks) -> values``. The engine is what
stands behind that callable in an audit (``engine.bind(vf)``), and it is where GPU time is saved:

* **Never twice.** Masks are de-duplicated within a request and looked up in the
  :class:`~spex.ablation.store.AblationStore` by (fingerprint, mask bits); only the missing ones reach
  the model. A rerun after a crash, a second method on the same subject, or the held-out set of a
  later audit all reuse what was measured.
* **Full batches, little padding.** Missing masks are sorted by ``vf.cost`` (e.g. tokens), longest
  first, and packed under a token budget (padded tokens = longest x count) and a mask cap. Longest
  first means a batch that does not fit in memory fails in the first seconds, not after an hour, and
  the ETA is conservative.
* **Packed by tokens for long rows.** A value function whose rows are long (the context lens: RAG
  prompts of hundreds or thousands of tokens) says how many padded tokens one call should hold
  (``vf.batch_tokens``); without a token budget of the engine's own, that is the budget, so a batch
  holds as many rows as fit under it (at most ``max_batch``) instead of a fixed count.
* **Out of memory is not fatal.** On ``torch.OutOfMemoryError`` (or a ``RuntimeError`` saying "out of
  memory", or ``MemoryError``) the batch is halved and the run carries on; the working size is
  remembered per fingerprint so later calls start there instead of failing again.
* **A crash loses one chunk at most.** Computed values are buffered and written to the store as a chunk
  every ``chunk_size`` masks or ``flush_seconds`` seconds, whichever comes first, and on any exception
  what was computed is still written before the error propagates.
* **Visible.** A ``rich`` progress bar with masks/s, tokens/s and an ETA from the remaining cost (shown
  only on a TTY and when ``progress`` is on); :class:`EngineStats` for tracking.

torch is never imported here: ``torch.inference_mode`` is used only when torch is already loaded (a
torch value function has imported it), so pure-numpy value functions pay nothing for it. A value
function that trains (the data lens' batched gradient steps) sets ``requires_grad = True`` to run
outside inference mode.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from spex.ablation.store import AblationStore
from spex.engine.inputs import check_masks, check_values
from spex.engine.maskbits import unique_rows
from spex.errors import SpexInputError
from spex.lenses.base import ValueFunction

log = logging.getLogger("spex.ablation")

ValueFn = Callable[[np.ndarray], np.ndarray]

DEFAULT_MAX_BATCH = 64
"""Masks per batch of a value function that declares no ``preferred_batch`` (a transformer forward)."""


def batch_size(vf: Any, max_batch: int | None) -> int:
    """Masks per batch for ``vf`` under the engine's cap ``max_batch``: its ``preferred_batch`` where it
    declares one (a lens whose cost per mask is small and whose fixed cost per call is not, such as the
    data lens' batched retraining), at most ``max_batch``; else ``max_batch`` or
    :data:`DEFAULT_MAX_BATCH`. Memory still bounds it: an out-of-memory batch is halved."""
    preferred = getattr(vf, "preferred_batch", None)
    if isinstance(preferred, bool) or not isinstance(preferred, (int, np.integer)) or int(preferred) < 1:
        return int(max_batch) if max_batch is not None else DEFAULT_MAX_BATCH
    return int(preferred) if max_batch is None else min(int(preferred), int(max_batch))


@dataclass
class EngineStats:
    """What one call (``engine.last``) or all calls (``engine.total``) of the engine did."""

    requested: int = 0        # rows asked for, duplicates included
    unique: int = 0           # distinct masks among them
    from_store: int = 0       # distinct masks found in the store
    computed: int = 0         # distinct masks the value function computed
    batches: int = 0          # value-function calls that succeeded
    chunks_written: int = 0   # store chunks written
    oom_halvings: int = 0     # times a batch was halved after running out of memory
    tokens: float = 0.0       # summed cost (tokens) of the computed masks
    padded_tokens: float = 0.0  # summed longest-cost x batch size (what the model actually ran)
    seconds: float = 0.0      # wall time of the call(s), lookups and writes included
    compute_seconds: float = 0.0  # time inside the value function

    @property
    def masks_per_s(self) -> float:
        """Model throughput in computed masks per second of value-function time."""
        return self.computed / self.compute_seconds if self.compute_seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Model throughput in (unpadded) cost units per second of value-function time."""
        return self.tokens / self.compute_seconds if self.compute_seconds > 0 else 0.0

    @property
    def padding_fraction(self) -> float:
        """Share of the model's work that was padding (0 when all masks cost the same)."""
        return 1.0 - self.tokens / self.padded_tokens if self.padded_tokens > 0 else 0.0

    def add(self, other: EngineStats) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, float]:
        """Flat metrics for MLflow / Postgres (derived rates included)."""
        out: dict[str, float] = dict(asdict(self))
        out.update(masks_per_s=self.masks_per_s, tokens_per_s=self.tokens_per_s,
                   padding_fraction=self.padding_fraction)
        return out


@dataclass
class _Limits:
    """Batch limits of one value function; shrunk (and kept) when it runs out of memory."""

    max_batch: int
    token_budget: float | None


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's OOM (CUDA, MPS, CPU allocators), a RuntimeError saying so, or MemoryError."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _release_accelerator_memory() -> None:
    """After an OOM, give cached blocks back so the halved batch can use them."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    with contextlib.suppress(Exception):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    with contextlib.suppress(Exception):
        if hasattr(torch, "mps") and torch.backends.mps.is_available():
            torch.mps.empty_cache()


def _no_grad_context(vf: Any) -> contextlib.AbstractContextManager[Any]:
    """``torch.inference_mode()`` when torch is loaded and the function does not train, else nothing."""
    torch = sys.modules.get("torch")
    if torch is None or getattr(vf, "requires_grad", False):
        return contextlib.nullcontext()
    return torch.inference_mode()


def _n_features(vf: Any) -> int:
    n = getattr(vf, "n_features", None)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
        raise SpexInputError(f"the value function must have a positive integer n_features; got {n!r}")
    return int(n)


def _call(vf: Any, batch: np.ndarray) -> np.ndarray:
    """One validated value-function call (ValueFunction validates itself; plain callables are checked)."""
    if isinstance(vf, ValueFunction):
        return vf(batch)
    return check_values(vf(batch), len(batch), source=getattr(vf, "__name__", type(vf).__name__))


def _costs(vf: Any, masks: np.ndarray) -> np.ndarray:
    """Per-mask cost for packing; falls back to 1 each when the function gives none or nonsense."""
    cost = getattr(vf, "cost", None)
    if cost is None or len(masks) == 0:
        return np.ones(len(masks))
    c = np.asarray(cost(masks), dtype=np.float64).reshape(-1)
    if c.shape != (len(masks),) or not np.all(np.isfinite(c)) or np.any(c < 0):
        log.warning("%s.cost returned unusable costs; packing by mask count", type(vf).__name__)
        return np.ones(len(masks))
    return np.maximum(c, 1e-9)


def lens_token_budget(vf: Any) -> float | None:
    """The padded tokens per call the value function asks for (``batch_tokens``), or None: a positive
    finite number, else ignored (with a warning) so a bad attribute never stops an audit."""
    value = getattr(vf, "batch_tokens", None)
    if value is None:
        return None
    try:
        budget = float(value)
    except (TypeError, ValueError):
        budget = math.nan
    if not (math.isfinite(budget) and budget > 0):
        log.warning("%s.batch_tokens is %r, not a positive number; packing without it", type(vf).__name__, value)
        return None
    return budget


class _Progress:
    """A rich progress bar on stderr with masks/s, tokens/s and a cost-based ETA (or nothing)."""

    def __init__(self, enabled: bool, total: int, total_cost: float, label: str) -> None:
        self.total_cost = total_cost
        self.bar = None
        if not enabled or total == 0:
            return
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
            )
        except ImportError:  # rich is a dependency, but progress is never worth a crash
            return
        console = Console(stderr=True)
        if not (console.is_terminal or console.is_jupyter):
            return
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), console=console, transient=False)
        self.task = self.bar.add_task(label, total=total, rate="")

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, done: int, stats: EngineStats, cost_done: float) -> None:
        if self.bar is None:
            return
        rate = stats.masks_per_s
        cost_rate = cost_done / stats.compute_seconds if stats.compute_seconds > 0 else 0.0
        eta = (self.total_cost - cost_done) / cost_rate if cost_rate > 0 else math.inf
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) and eta < 86400 * 30 else "?"
        self.bar.update(self.task, completed=done,
                        rate=f"{rate:,.1f} masks/s  {stats.tokens_per_s:,.0f} tok/s  ETA {eta_text}")


class AblationEngine:
    """Computes value-function outputs for masks through the ablation store.

    ``token_budget``: the most padded cost (tokens) one batch may hold (None: the value function's
    ``batch_tokens`` where it has one, else no token limit);
    ``max_batch``: the most masks one batch may hold (None: no cap of its own); a value function that
    declares a ``preferred_batch`` gets batches of that size under the cap, any other gets ``max_batch``
    (None: :data:`DEFAULT_MAX_BATCH`); ``chunk_size`` / ``flush_seconds``: how often
    computed values are written to the store (the most a crash can lose); ``progress``: show a
    progress bar when stderr is a terminal.
    """

    def __init__(self, store: AblationStore | None = None, *, token_budget: float | None = None,
                 max_batch: int | None = None, chunk_size: int = 1024, flush_seconds: float = 30.0,
                 progress: bool = True, compact_above: int = 256) -> None:
        if max_batch is not None and int(max_batch) < 1:
            raise SpexInputError(f"max_batch must be >= 1 (or None for the value function's preferred batch); "
                                 f"got {max_batch!r}")
        if token_budget is not None and not float(token_budget) > 0:
            raise SpexInputError(f"token_budget must be positive (or None for no limit); got {token_budget!r}")
        if int(chunk_size) < 1:
            raise SpexInputError(f"chunk_size must be >= 1; got {chunk_size!r}")
        self.store = store if store is not None else AblationStore()
        self.token_budget = float(token_budget) if token_budget is not None else None
        self.max_batch = int(max_batch) if max_batch is not None else None
        self.chunk_size = int(chunk_size)
        self.flush_seconds = float(flush_seconds)
        self.progress = bool(progress)
        self.compact_above = int(compact_above)
        self.last = EngineStats()
        self.total = EngineStats()
        self._limits: dict[str, _Limits] = {}

    def __repr__(self) -> str:
        return (f"AblationEngine({self.store!r}, token_budget={self.token_budget}, max_batch={self.max_batch}, "
                f"chunk_size={self.chunk_size})")

    # ------------------------------------------------------------------ public
    def bind(self, vf: ValueFunction | ValueFn) -> BoundValueFunction:
        """A plain ``f(masks) -> values`` backed by this engine and its store: what to hand to
        ``spex.explain`` or any method, carrying the function's n_features, labels and fingerprint."""
        return BoundValueFunction(self, vf)

    def limits(self, vf: Any) -> tuple[int, float | None]:
        """(max masks per batch, token budget) currently used for ``vf`` (smaller after an OOM)."""
        lim = self._limits_for(vf)
        return lim.max_batch, lim.token_budget

    def values(self, vf: ValueFunction | ValueFn, masks: np.ndarray) -> np.ndarray:
        """Values of ``vf`` on ``masks`` (float64, in mask order), computing only what is not stored.

        ``vf`` needs ``n_features``; with a ``fingerprint`` its values are stored and reused, without
        one they are only de-duplicated within this call.
        """
        if isinstance(vf, BoundValueFunction):
            vf = vf.base
        start = time.perf_counter()
        n = _n_features(vf)
        x = check_masks(masks, n)
        stats = EngineStats(requested=len(x))
        if len(x) == 0:
            self.last = stats
            return np.zeros(0)
        unique, inverse = unique_rows(x)
        stats.unique = len(unique)
        fingerprint = getattr(vf, "fingerprint", None) or None
        if fingerprint is not None:
            values, found = self.store.lookup(fingerprint, unique)
        else:
            values, found = np.full(len(unique), np.nan), np.zeros(len(unique), dtype=bool)
        stats.from_store = int(found.sum())
        missing = np.flatnonzero(~found)
        try:
            if len(missing):
                if fingerprint is not None:  # fails here, before any model call, if the store is unwritable
                    labels = getattr(vf, "feature_labels", None)
                    describe = vf.describe() if hasattr(vf, "describe") else None
                    self.store.register(fingerprint, n, list(labels) if labels is not None else None, describe)
                self._compute(vf, fingerprint, unique, missing, values, stats)
        finally:
            stats.seconds = time.perf_counter() - start
            self.last = stats
            self.total.add(stats)
        if fingerprint is not None and stats.chunks_written:
            self.store.maybe_compact(fingerprint, max_chunks=self.compact_above)
        if stats.computed:
            log.info("ablation %s: %d masks (%d unique, %d from store, %d computed) in %.1fs, %.1f masks/s, "
                     "%.0f tokens/s, %d OOM halvings", str(fingerprint)[:12], stats.requested, stats.unique,
                     stats.from_store, stats.computed, stats.seconds, stats.masks_per_s, stats.tokens_per_s,
                     stats.oom_halvings)
        return values[inverse]

    # ------------------------------------------------------------------ internals
    def _limits_for(self, vf: Any) -> _Limits:
        key = getattr(vf, "fingerprint", None) or f"id:{id(vf)}"
        if key not in self._limits:
            budget = self.token_budget if self.token_budget is not None else lens_token_budget(vf)
            self._limits[key] = _Limits(batch_size(vf, self.max_batch), budget)
        return self._limits[key]

    def _compute(self, vf: Any, fingerprint: str | None, unique: np.ndarray, missing: np.ndarray,
                 values: np.ndarray, stats: EngineStats) -> None:
        """Compute ``values[missing]`` in cost-sorted batches, flushing chunks to the store."""
        todo = unique[missing]
        costs = _costs(vf, todo)
        order = np.argsort(-costs, kind="stable")  # longest first: OOM shows up at once; ETA conservative
        sorted_costs = costs[order]
        limits = self._limits_for(vf)
        pending: list[np.ndarray] = []  # positions (into ``missing``) computed but not yet stored
        pending_count = 0
        last_flush = time.perf_counter()
        label = f"ablate {type(vf).__name__} {str(fingerprint or '')[:8]}".strip()

        def flush() -> None:
            nonlocal pending, pending_count, last_flush
            if pending and fingerprint is not None:
                rows = missing[np.concatenate(pending)]
                if self.store.append(fingerprint, unique[rows], values[rows]):
                    stats.chunks_written += 1
            pending, pending_count, last_flush = [], 0, time.perf_counter()

        pos, cost_done = 0, 0.0
        with _Progress(self.progress, len(todo), float(costs.sum()), label) as bar, _no_grad_context(vf):
            try:
                while pos < len(todo):
                    size = self._batch_size(sorted_costs, pos, limits)
                    sel = order[pos:pos + size]
                    t0 = time.perf_counter()
                    out: np.ndarray | None = None
                    try:
                        out = _call(vf, todo[sel])
                    except Exception as exc:
                        if not is_out_of_memory(exc):
                            raise
                        if size == 1:
                            exc.add_note(f"spex: the value function ran out of memory on a single mask "
                                         f"(cost {sorted_costs[pos]:g}); nothing smaller can be tried. Use a "
                                         f"device with more memory or a smaller model / shorter input.")
                            raise
                    if out is None:  # out of memory; outside the except block, so its frames are freed
                        new_size = size // 2
                        # Memory grows with padded tokens (longest x count): cap those, so the next batch
                        # of this length holds new_size masks and shorter masks may still batch wider.
                        budget = float(sorted_costs[pos]) * new_size
                        limits.token_budget = budget if limits.token_budget is None else min(limits.token_budget,
                                                                                             budget)
                        stats.oom_halvings += 1
                        log.warning("out of memory on a batch of %d masks (%g padded tokens); retrying with %d",
                                    size, sorted_costs[pos] * size, new_size)
                        _release_accelerator_memory()
                        continue
                    stats.compute_seconds += time.perf_counter() - t0
                    values[missing[sel]] = out
                    stats.computed += size
                    stats.batches += 1
                    stats.tokens += float(costs[sel].sum())
                    stats.padded_tokens += float(sorted_costs[pos]) * size
                    cost_done += float(costs[sel].sum())
                    pos += size
                    pending.append(sel)
                    pending_count += size
                    if pending_count >= self.chunk_size or time.perf_counter() - last_flush >= self.flush_seconds:
                        flush()
                    bar.update(pos, stats, cost_done)
            except BaseException:
                try:  # keep what was measured; the original error is what the caller must see
                    flush()
                except Exception as store_exc:  # noqa: BLE001
                    log.error("could not store %d computed values while failing: %s", pending_count, store_exc)
                raise
            flush()

    @staticmethod
    def _batch_size(sorted_costs: np.ndarray, pos: int, limits: _Limits) -> int:
        """How many masks from ``pos`` on fit the limits (costs sorted descending: the first is the
        longest, so padded tokens = first cost x count)."""
        size = min(limits.max_batch, len(sorted_costs) - pos)
        if limits.token_budget is not None:
            size = min(size, max(1, math.floor(limits.token_budget / sorted_costs[pos] + 1e-9)))
        return max(1, size)


class BoundValueFunction(ValueFunction):
    """``f(masks) -> values`` served by an :class:`AblationEngine` (what ``engine.bind`` returns).

    Looks like the function it wraps (n_features, feature_labels, fingerprint, cost, describe, and any
    other attribute by delegation) so methods and shapiq games can take it directly.
    """

    def __init__(self, engine: AblationEngine, vf: ValueFunction | ValueFn) -> None:
        if isinstance(vf, BoundValueFunction):
            vf = vf.base
        self.engine = engine
        self.base = vf
        self.n_features = _n_features(vf)
        labels = getattr(vf, "feature_labels", None)
        self.feature_labels: Sequence[str] = list(labels) if labels is not None else \
            [str(i) for i in range(self.n_features)]
        self.fingerprint = getattr(vf, "fingerprint", None)  # type: ignore[assignment]

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        return self.engine.values(self.base, masks)

    def compute(self, masks: np.ndarray) -> np.ndarray:
        return self.engine.values(self.base, masks)

    def cost(self, masks: np.ndarray) -> np.ndarray:
        return _costs(self.base, masks)

    def describe(self) -> dict[str, Any]:
        base = self.base.describe() if hasattr(self.base, "describe") else {}
        return dict(base) if base else super().describe()

    @property
    def stats(self) -> EngineStats:
        """The engine's cumulative stats."""
        return self.engine.total

    def __getattr__(self, name: str) -> Any:
        if name in ("base", "engine") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def __repr__(self) -> str:
        return f"BoundValueFunction({self.base!r}, engine={self.engine!r})"


# ---------------------------------------------------------------------- throughput
@dataclass(frozen=True)
class Throughput:
    """Forward throughput of a value function at one batch size (store bypassed)."""

    batch_size: int
    masks: int
    seconds: float
    masks_per_s: float
    tokens_per_s: float


def measure_throughput(vf: ValueFunction | ValueFn, *, batch_sizes: Sequence[int] = (1, 8, 32),
                       batches: int = 2, warmup: int = 1, seed: int = 0) -> list[Throughput]:
    """Time ``vf`` on random uniform masks at each batch size (after ``warmup`` untimed calls).

    For ``spex estimate`` and the lens benchmark: how long an audit's budget of masks will take, and
    which batch size saturates the device. The store is bypassed on purpose (a cached value is not a
    measurement); an out-of-memory batch size is reported with zero throughput and stops the sweep.
    """
    n = _n_features(vf)
    rng = np.random.default_rng(seed)
    results: list[Throughput] = []
    for size in batch_sizes:
        masks = rng.random((int(size) * (batches + warmup), n)) < 0.5
        masks[0] = True  # the full mask: usually the longest input
        tokens = float(_costs(vf, masks[warmup * size:]).sum())
        try:
            with _no_grad_context(vf):
                for b in range(warmup):
                    _call(vf, masks[b * size:(b + 1) * size])
                t0 = time.perf_counter()
                for b in range(warmup, warmup + batches):
                    _call(vf, masks[b * size:(b + 1) * size])
                seconds = time.perf_counter() - t0
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            _release_accelerator_memory()
            results.append(Throughput(int(size), 0, 0.0, 0.0, 0.0))
            break
        count = int(size) * batches
        results.append(Throughput(int(size), count, seconds, count / seconds if seconds > 0 else math.inf,
                                  tokens / seconds if seconds > 0 else math.inf))
    return results
