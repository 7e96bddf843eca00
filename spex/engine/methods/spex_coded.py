"""SPEX: a coded sparse Walsh–Hadamard transform (Kang et al., 2025).

The value function is sampled on a structured design so that its few large Fourier coefficients
can be read off small transforms:

1. **design** — C random subsampling matrices M_c ∈ F2^(n×b) and p + 1 delays d_j (the zero row and
   the p parity rows of a shortened BCH code correcting t errors, :mod:`spex.engine.methods.bch`); the
   masks are x = M_c·ℓ ⊕ d_j for every ℓ ∈ F2^b: C·(p+1)·2^b masks, all sent in one evaluator call;
2. **aliasing** — a 2^b-point WHT per (c, j) block (one vectorised call): bin ``u`` of block (c, j)
   holds Σ_{k: M_c^T k = u} F(k)·(−1)^<d_j, k>;
3. **singleton detection** — for a bin holding one k, the signs across the parity delays relative
   to delay 0 are the BCH parity bits of k, so decoding the word [0…0 | bits] yields k (joint
   coding: up to t − |k| flipped parity bits are corrected too). Hard decoding (Berlekamp–Massey)
   or soft decoding (Chase: flip the least reliable bits); every candidate bin of an iteration is
   decoded in one batched call. A decoded k is kept only if it hashes back to its bin, has order
   ≤ t and explains > 10 % of the bin's energy; F(k) is the bin's sign-corrected mean;
4. **peeling** — each found (k, F(k)) is subtracted from its bin in every group, which can turn
   multitons into singletons; repeat until nothing new is found;
5. **refit** — least squares of the found support (plus the constant) on all the samples.

Budget → (b, t) follows the reference: the largest b with C·(p+1)·2^b ≤ budget; if b < 3, t is
lowered (to 2 at least, as the reference does) until b ≥ 3; otherwise the budget is too small.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.linalg import cho_factor, cho_solve, lstsq

from spex.engine import sets
from spex.engine.batching import MaskEvaluator
from spex.engine.methods.base import (
    Method,
    StageTimer,
    bool_option,
    choice_option,
    int_option,
)
from spex.engine.methods.bch import ShortenedBCH, parity_length, shortened_bch
from spex.engine.sampling import rng
from spex.engine.spectrum import Spectrum
from spex.engine.walsh import fwht
from spex.errors import SpexInputError

MIN_B = 3  # the reference needs b > 2
MAX_B = 24  # 2^24 bins per block is far beyond any realistic budget; bounds memory on huge budgets
MIN_T = 2  # the reference lowers t down to 2, not below
MAX_T = 16
MAX_CHASE = 10  # 2^10 test patterns per failing bin
CHASE_WORDS = 1 << 18  # Chase test words per decode call (bounds memory on huge noisy designs)
ENERGY_FRACTION = 0.1  # a singleton must explain more than this share of its bin's energy
DENSE_REFIT_MAX = 6000  # supports up to this size are refit with a dense Cholesky solve
REL_TOL = 1e-9  # bins with amplitude below REL_TOL × the largest bin are treated as empty


@dataclass(frozen=True)
class SpexPlan:
    """The design chosen for a budget: C groups × (p + 1) delays × 2^b masks."""

    n: int
    b: int
    t: int
    t_requested: int
    C: int
    p: int
    bch_length: int
    bch_dimension: int

    @property
    def n_masks(self) -> int:
        return self.C * (self.p + 1) * (1 << self.b)


def plan_design(n: int, budget: int, *, t: int = 5, C: int = 3, b: int | None = None) -> SpexPlan:
    """Map a budget to (b, t) as the reference does; raise SpexInputError stating the minimum.

    t is first capped at n (no interaction has more than n members, and a smaller t is a shorter
    code), then the largest b with C·(p+1)·2^b ≤ budget is taken (capped at max(3, n) — more bins
    than frequencies buys nothing — and at 24); if b < 3, t is lowered while t > 2.
    """
    t_eff = min(int(t), int(n))
    if b is not None:
        code = shortened_bch(n, t_eff)
        need = C * (code.p + 1) * (1 << int(b))
        if budget < need:
            raise SpexInputError(
                f"budget {budget} is below the minimum of {need} masks for method 'spex' at n={n} "
                f"with b={b}, t={t_eff}, C={C} (C·(p+1)·2^b, p={code.p}); raise the budget or lower b"
            )
        return _plan(n, int(b), t_eff, int(t), C)
    b_cap = min(MAX_B, max(MIN_B, int(n)))
    floor_t = min(t_eff, MIN_T)
    for tt in range(t_eff, floor_t - 1, -1):
        p = parity_length(n, tt)
        per_bin = C * (p + 1)
        bb = int(np.floor(np.log2(budget / per_bin))) if budget >= per_bin else -1
        # guard the float log against an off-by-one at exact powers of two
        while bb >= 0 and per_bin * (1 << bb) > budget:
            bb -= 1
        while per_bin * (1 << (bb + 1)) <= budget:
            bb += 1
        if bb >= MIN_B:
            return _plan(n, min(bb, b_cap), tt, int(t), C)
    minimum = minimum_budget(n, t=t, C=C)
    raise SpexInputError(
        f"budget {budget} is below the minimum of {minimum} masks for method 'spex' at n={n} "
        f"(C·(p+1)·2^3 with t lowered to {floor_t}); raise the budget to at least {minimum}"
    )


def minimum_budget(n: int, *, t: int = 5, C: int = 3, b: int | None = None) -> int:
    """Smallest budget :func:`plan_design` accepts: C·(p+1)·2^3 at the lowest t it may fall back to
    (or C·(p+1)·2^b at the requested t when b is fixed)."""
    t_eff = min(int(t), int(n))
    if b is not None:
        return C * (parity_length(n, t_eff) + 1) * (1 << int(b))
    return C * (parity_length(n, min(t_eff, MIN_T)) + 1) * (1 << MIN_B)


def _plan(n: int, b: int, t: int, t_requested: int, C: int) -> SpexPlan:
    code = shortened_bch(n, t)
    return SpexPlan(n=n, b=b, t=t, t_requested=t_requested, C=C, p=code.p,
                    bch_length=code.length, bch_dimension=code.dimension)


@dataclass
class CodedDesign:
    """The masks of a plan and what decoding needs to know about them.

    Attributes:
        subsampling: uint8 (C, n, b), the M_c.
        bin_codes: int64 (C, n): row i of M_c as an integer, so the bin of a sparse k in group c is
            the XOR of ``bin_codes[c, members]`` (no dense (K, n) products).
        delays: bool (p + 1, n).
        masks: bool (C, p + 1, 2^b, n).
    """

    plan: SpexPlan
    code: ShortenedBCH
    subsampling: np.ndarray
    bin_codes: np.ndarray
    delays: np.ndarray
    masks: np.ndarray


def build_design(plan: SpexPlan, seed: int) -> CodedDesign:
    """Draw the subsampling matrices from ``rng(seed, "spex-design")`` and build every mask."""
    n, b, C = plan.n, plan.b, plan.C
    code = shortened_bch(n, plan.t)
    generator = rng(seed, "spex-design")
    subsampling = generator.integers(0, 2, size=(C, n, b), dtype=np.uint8)
    ell = ((np.arange(1 << b, dtype=np.int64)[:, None] >> np.arange(b)) & 1).astype(np.float32)  # (2^b, b)
    # base[c, ℓ] = M_c ℓ (mod 2); float32 products are exact (counts ≤ b) and use BLAS
    base = (np.matmul(ell[None], subsampling.transpose(0, 2, 1).astype(np.float32)).astype(np.int64) & 1).astype(bool)
    delays = code.delays()
    masks = base[:, None, :, :] ^ delays[None, :, None, :]  # (C, p+1, 2^b, n)
    bin_codes = subsampling.astype(np.int64) @ (np.int64(1) << np.arange(b, dtype=np.int64))
    return CodedDesign(plan=plan, code=code, subsampling=subsampling, bin_codes=bin_codes, delays=delays, masks=masks)


def bins_of(design: CodedDesign, members: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Bin index M_c^T k of each sparse k (rows of padded ``members``) in group ``groups[i]``."""
    members = np.asarray(members, dtype=np.int64)
    if members.shape[1] == 0:
        return np.zeros(len(members), dtype=np.int64)
    codes = design.bin_codes[np.asarray(groups)[:, None], np.clip(members, 0, None)]
    codes = np.where(members >= 0, codes, 0)
    return np.bitwise_xor.reduce(codes, axis=1)


def sign_patterns(code: ShortenedBCH, members: np.ndarray) -> np.ndarray:
    """(−1)^<d_j, k> for every delay j (K, p + 1): +1 at delay 0, then the BCH parity of k."""
    parity = code.parity_of_members(members)
    return np.hstack([np.ones((len(members), 1)), 1.0 - 2.0 * parity])


@dataclass
class _Stats:
    iterations: int = 0
    decode_seconds: float = 0.0
    words_decoded: int = 0
    bins_tested: int = 0
    hard_accepted: int = 0
    chase_accepted: int = 0
    chase_bins: int = 0


class SPEX(Method):
    """SPEX with a batched BCH decoder (hard or Chase soft decoding), peeling and a refit.

    Options:
        t: errors the code corrects = the largest interaction order it can find (default 5).
        C: number of subsampling groups (default 3).
        decoder: ``"soft"`` (Chase) or ``"hard"``.
        b: fix the number of subsampling bits instead of deriving it from the budget.
        chase_depth: least reliable parity bits Chase flips (all 2^depth − 1 patterns); default t.
        refit: least-squares refit of the found support on all samples (default True).
        max_iter: cap on peeling iterations.
    """

    name = "spex"
    defaults = {"t": 5, "C": 3, "decoder": "soft", "b": None, "chase_depth": None, "refit": True, "max_iter": 32}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        o["t"] = int_option(o["t"], "t", 1, MAX_T)
        o["C"] = int_option(o["C"], "C", 1, 64)
        if o["b"] is not None:
            o["b"] = int_option(o["b"], "b", 1, MAX_B)
        if o["chase_depth"] is not None:
            o["chase_depth"] = int_option(o["chase_depth"], "chase_depth", 0, MAX_CHASE)
        o["max_iter"] = int_option(o["max_iter"], "max_iter", 1, 10_000)
        choice_option(o["decoder"], "decoder", ("soft", "hard"))
        bool_option(o["refit"], "refit")

    # ------------------------------------------------------------------ budget
    def minimum_budget(self, n: int) -> int:
        o = self.options
        return minimum_budget(n, t=o["t"], C=o["C"], b=o["b"])

    def plan(self, n: int, budget: int) -> SpexPlan:
        o = self.options
        return plan_design(n, budget, t=o["t"], C=o["C"], b=o["b"])

    # ------------------------------------------------------------------ fit
    def fit(
        self, evaluate: MaskEvaluator, n: int, budget: int, seed: int, timer: StageTimer
    ) -> tuple[Spectrum, dict[str, Any]]:
        with timer.stage("sampling"):
            plan = self.plan(n, budget)
            design = build_design(plan, seed)
            flat = design.masks.reshape(-1, n)
        calls_before = evaluate.n_calls
        y = evaluate(flat)
        with timer.stage("fit"):
            bins = aliased_bins(y.reshape(plan.C, plan.p + 1, 1 << plan.b))
            members, values, stats = self.decode(design, bins)
        refit = bool(self.options["refit"])
        with timer.stage("refit"):
            spectrum = self._finish(design, bins, members, values, refit)
        diagnostics: dict[str, Any] = {
            **asdict(plan),
            "n_masks": plan.n_masks,
            "unique_masks": int(evaluate.n_calls - calls_before),
            "decoder": self.options["decoder"],
            "chase_depth": self._chase_depth(plan) if self.options["decoder"] == "soft" else 0,
            "support_size": int(np.count_nonzero(sets.orders(spectrum.members) > 0)),
            "peeled": int(len(values)),
            "refit": refit,
            **asdict(stats),
        }
        return spectrum, diagnostics

    def _chase_depth(self, plan: SpexPlan) -> int:
        depth = self.options["chase_depth"]
        depth = plan.t if depth is None else depth
        return int(min(depth, plan.p, MAX_CHASE))

    def decode(self, design: CodedDesign, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray, _Stats]:
        """Peeling decoder on the aliased bins (C, 2^b, p + 1) of :func:`aliased_bins`. Returns the
        peeled (members, values) — possibly with repeats, which the caller sums — and statistics."""
        plan, code = design.plan, design.code
        n_bins = 1 << plan.b
        residual = np.array(bins, dtype=np.float64, copy=True)
        energy = np.mean(residual**2, axis=2)
        threshold = max(float(energy.max(initial=0.0)) * REL_TOL**2, 1e-300)
        dirty = np.ones((plan.C, n_bins), dtype=bool)
        found_members: list[np.ndarray] = []
        found_values: list[np.ndarray] = []
        stats = _Stats()
        soft = self.options["decoder"] == "soft"
        depth = self._chase_depth(plan) if soft else 0
        for _ in range(int(self.options["max_iter"])):
            energy = np.mean(residual**2, axis=2)
            groups, bins = np.nonzero(dirty & (energy > threshold))
            dirty[:] = False
            if len(groups) == 0:
                break
            stats.iterations += 1
            stats.bins_tested += len(groups)
            cols = residual[groups, bins]  # (N, p+1)
            members, rho, ok = self._detect(design, cols, groups, bins, depth, stats)
            if not ok.any():
                break
            members, rho = members[ok], rho[ok]
            # one k may be a singleton in several groups at once: peel it once, with the mean estimate
            keys = np.ascontiguousarray(members).view(np.dtype((np.void, members.dtype.itemsize * members.shape[1])))
            _, first, inverse = np.unique(keys.reshape(-1), return_index=True, return_inverse=True)
            inverse = inverse.reshape(-1)
            uniq = members[first]
            est = np.bincount(inverse, weights=rho) / np.bincount(inverse)
            # peel from every group: V[c, M_c^T k, :] -= F(k) (−1)^<d, k>
            signs = sign_patterns(code, uniq)
            all_groups = np.repeat(np.arange(plan.C), len(uniq))
            all_members = np.tile(uniq, (plan.C, 1))
            peel_bins = bins_of(design, all_members, all_groups)
            np.add.at(residual, (all_groups, peel_bins), -np.tile(est[:, None] * signs, (plan.C, 1)))
            dirty[all_groups, peel_bins] = True
            found_members.append(uniq)
            found_values.append(est)
        if not found_members:
            return np.zeros((0, plan.t), dtype=np.int64), np.zeros(0), stats
        return np.concatenate(found_members), np.concatenate(found_values), stats

    def _detect(
        self, design: CodedDesign, cols: np.ndarray, groups: np.ndarray, bins: np.ndarray, depth: int, stats: _Stats
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Singleton test of N bins at once: (members (N, t), F estimates (N,), accepted (N,))."""
        code = design.code
        # hard decisions: parity bit j is 1 when delay j's sign differs from delay 0's
        hard = (cols[:, 1:] < 0) != (cols[:, :1] < 0)
        t0 = time.perf_counter()
        members, _, counts = code.decode_parity(hard)
        stats.decode_seconds += time.perf_counter() - t0
        stats.words_decoded += len(hard)
        rho, ok = self._validate(design, cols, groups, bins, members, counts)
        stats.hard_accepted += int(ok.sum())
        if depth == 0 or ok.all():
            return members, rho, ok
        # Chase: flip every non-empty combination of the `depth` least reliable parity bits of the
        # bins that failed, decode all test words in one call, keep each bin's best valid candidate
        fail = np.flatnonzero(~ok)
        stats.chase_bins += len(fail)
        patterns = ((np.arange(1, 1 << depth)[:, None] >> np.arange(depth)) & 1).astype(bool)  # (P, depth)
        members, rho, ok = members.copy(), rho.copy(), ok.copy()
        per_call = max(1, CHASE_WORDS // len(patterns))
        for start in range(0, len(fail), per_call):  # one call unless the batch is huge (memory bound)
            chunk = fail[start : start + per_call]
            c_members, c_rho, good = self._chase(design, cols[chunk], groups[chunk], bins[chunk], hard[chunk], patterns, stats)
            members[chunk[good]] = c_members[good]
            rho[chunk[good]] = c_rho[good]
            ok[chunk[good]] = True
            stats.chase_accepted += int(good.sum())
        return members, rho, ok

    def _chase(
        self, design: CodedDesign, cols: np.ndarray, groups: np.ndarray, bins: np.ndarray, hard: np.ndarray,
        patterns: np.ndarray, stats: _Stats,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Chase-2 on F bins: every non-empty flip pattern of the least reliable parity bits, all
        F·P test words in one decode call; per bin, the valid candidate with the largest explained
        energy (p+1)·ρ² — equivalently the smallest residual of the singleton fit."""
        code = design.code
        n_fail, (n_pat, depth) = len(cols), patterns.shape
        reliability = np.abs(cols[:, 1:])
        if depth < code.p:
            weak = np.argpartition(reliability, depth - 1, axis=1)[:, :depth]
        else:
            weak = np.argsort(reliability, axis=1)[:, :depth]
        flips = np.zeros((n_fail, n_pat, code.p), dtype=bool)
        flips[np.arange(n_fail)[:, None, None], np.arange(n_pat)[None, :, None], weak[:, None, :]] = patterns[None]
        test = hard[:, None, :] ^ flips  # (F, P, p)
        t0 = time.perf_counter()
        c_members, _, c_counts = code.decode_parity(test.reshape(-1, code.p))
        stats.decode_seconds += time.perf_counter() - t0
        stats.words_decoded += len(c_counts)
        rep = np.repeat(np.arange(n_fail), n_pat)
        c_rho, c_ok = self._validate(design, cols[rep], groups[rep], bins[rep], c_members, c_counts)
        score = np.where(c_ok, c_rho**2, -1.0).reshape(n_fail, n_pat)
        best = np.argmax(score, axis=1)
        good = score[np.arange(n_fail), best] >= 0
        pick = np.arange(n_fail) * n_pat + best
        return c_members[pick], c_rho[pick], good

    @staticmethod
    def _validate(
        design: CodedDesign, cols: np.ndarray, groups: np.ndarray, bins: np.ndarray, members: np.ndarray,
        counts: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """ρ (the sign-corrected mean of the bin) and the acceptance test of each decoded k:
        decoded, order ≤ t, hashes back to its bin, explains > 10 % of the bin's energy."""
        decoded = counts >= 0
        signs = sign_patterns(design.code, members)
        rho = np.mean(cols * signs, axis=1)
        total = np.sum(cols**2, axis=1)
        explained = cols.shape[1] * rho**2
        hashes = bins_of(design, members, groups) == bins
        order_ok = sets.orders(members) <= design.plan.t
        ok = decoded & order_ok & hashes & (explained > ENERGY_FRACTION * total) & (total > 0)
        return np.where(ok, rho, 0.0), ok

    @staticmethod
    def _finish(
        design: CodedDesign, bins: np.ndarray, members: np.ndarray, values: np.ndarray, refit: bool
    ) -> Spectrum:
        """Sum repeated peels, add the constant, and (optionally) refit all on every sample."""
        n = design.plan.n
        width = max(1, members.shape[1])
        members = sets.pad_to(np.asarray(members, dtype=np.int32), width)
        constant = np.full((1, width), sets.PAD, dtype=np.int32)
        support, coef = sets.group_sum(np.vstack([constant, members]), np.concatenate([[0.0], values]), n)
        if refit:
            coef = refit_on_design(design, bins, support)
        return Spectrum(n, support, coef, merge=False)


def aliased_bins(samples: np.ndarray) -> np.ndarray:
    """Bins-major aliased spectrum V[c, u, j] = Σ_{k: M_c^T k = u} F(k)·(−1)^<d_j, k> (C, 2^b, p+1)
    from the samples (C, p + 1, 2^b): one normalised WHT over all blocks at once."""
    samples = np.asarray(samples, dtype=np.float64)
    return np.ascontiguousarray((fwht(samples) / samples.shape[-1]).transpose(0, 2, 1))


def refit_on_design(design: CodedDesign, bins: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Least squares of the support on ALL C·(p+1)·2^b samples, without forming the design matrix.

    The design row of mask M_c·ℓ ⊕ d_j for frequency k is (−1)^<d_j,k>·(−1)^<ℓ, M_c^T k>, a Walsh
    function of ℓ, so over one block the columns are orthogonal unless they share a bin:
    Xᵀy / 2^b = Σ_c Σ_j s_j(k) V[c, h_c(k), j] and XᵀX / 2^b = Σ_c [h_c(k) = h_c(k')] s(k)·s(k').
    Both come from the aliased bins already computed: O(C·K·p) plus the same-bin pairs, instead of
    O(C·p·2^b·K) for the dense design. The solution equals ``lstsq(parity_design(masks), y)``
    (checked in the tests), including the minimum-norm choice when the support is not identifiable.
    """
    plan = design.plan
    k = len(support)
    signs = sign_patterns(design.code, support)  # (K, p+1)
    width = plan.p + 1
    groups = np.repeat(np.arange(plan.C), k)
    hashed = bins_of(design, np.tile(support, (plan.C, 1)), groups).reshape(plan.C, k)
    # Z (K, C·2^b·(p+1)) with Z[k, (c, h_c(k), j)] = s_j(k): XᵀX/2^b = Z Zᵀ, Xᵀy/2^b = Z vec(V)
    cols = ((np.arange(plan.C)[:, None] << plan.b) + hashed)[:, :, None] * width + np.arange(width)  # (C, K, p+1)
    rows = np.broadcast_to(np.arange(k)[None, :, None], cols.shape)
    vals = np.broadcast_to(signs[None], cols.shape)
    z = sp.csr_matrix((vals.ravel(), (rows.ravel(), cols.ravel())), shape=(k, plan.C * (1 << plan.b) * width))
    if k <= DENSE_REFIT_MAX:
        gram = (z @ z.T).tocsr()
        rhs = z @ np.asarray(bins, dtype=np.float64).reshape(-1)
        g = gram.toarray()
        try:
            factor = cho_factor(g, check_finite=False)
            coef = cho_solve(factor, rhs, check_finite=False)
            if np.all(np.isfinite(coef)) and np.allclose(g @ coef, rhs, rtol=1e-9, atol=1e-12 * max(1.0, np.abs(rhs).max())):
                return coef
        except np.linalg.LinAlgError:
            pass
        return lstsq(g, rhs, lapack_driver="gelsd", check_finite=False)[0]
    # large supports: ‖Zᵀβ − vec(V)‖² has the same minimiser as ‖Xβ − y‖² (expand both), and
    # LSQR on the sparse Zᵀ keeps the design's conditioning (the Gram matrix would square it)
    return spla.lsqr(z.T.tocsr(), np.asarray(bins, dtype=np.float64).reshape(-1), atol=1e-14, btol=1e-14, iter_lim=20 * k)[0]
