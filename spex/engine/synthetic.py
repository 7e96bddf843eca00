"""Planted games: value functions with a known Möbius expansion, for tests and benchmarks.

* ``hierarchical``: every non-empty subset of each of ``k`` random ``order``-sets carries a weight
  (interactions built up from lower-order effects, as in language models);
* ``peak``: only the ``order``-sets themselves carry weight (the hardest case for low-order methods).

Optional noise is a deterministic function of the mask (hashed from its bits), so a noisy game is
still a function: evaluating a mask twice gives the same value, like a real model on a fixed input.
"""

from __future__ import annotations

import itertools

import numpy as np

from spex.engine import sets
from spex.engine.inputs import check_masks
from spex.engine.sampling import rng as seeded_rng
from spex.engine.spectrum import Spectrum


class PlantedGame:
    """f(x) = Σ_T a(T) Π_{i∈T} x_i (+ hashed noise); ``mobius`` holds the planted a(T)."""

    def __init__(self, n: int, members: np.ndarray, weights: np.ndarray, *, noise: float = 0.0, seed: int = 0):
        self.n_features = n
        self.feature_labels = [f"x{i}" for i in range(n)]
        self.members = sets.canonical(members)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.noise = float(noise)
        self.seed = int(seed)
        self.fingerprint = f"planted-{n}-{len(self.weights)}-{noise}-{seed}"
        self._incidence = sets.incidence(self.members, n)
        self._orders = sets.orders(self.members)
        self._salt = seeded_rng(seed, "noise").integers(1, 2**62, size=max(1, (n + 63) // 64), dtype=np.uint64)

    @property
    def mobius(self) -> dict[tuple[int, ...], float]:
        return dict(zip(sets.to_tuples(self.members), self.weights.tolist(), strict=True))

    def clean(self, masks: np.ndarray) -> np.ndarray:
        x = check_masks(masks, self.n_features)
        present = np.asarray((self._incidence @ x.T.astype(np.float64)).T) == self._orders
        return present.astype(np.float64) @ self.weights

    def _hashed_normal(self, x: np.ndarray) -> np.ndarray:
        """Standard normal noise that depends only on the mask bits (splitmix64 over 64-bit words)."""
        padded = np.zeros((len(x), len(self._salt) * 64), dtype=bool)
        padded[:, : x.shape[1]] = x
        words = _pack64(padded)
        with np.errstate(over="ignore"):
            h = np.zeros(len(x), dtype=np.uint64)
            for j in range(words.shape[1]):  # a loop over 64-bit words of the mask (n/64), not masks
                z = h ^ (words[:, j] + self._salt[j])
                z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
                z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
                h = z ^ (z >> np.uint64(31))
            u1 = ((h >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
            h2 = (h ^ np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
            u2 = ((h2 >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
        return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        x = check_masks(masks, self.n_features)
        values = self.clean(x)
        if self.noise > 0:
            values = values + self.noise * self._hashed_normal(x)
        return values

    def spectrum(self) -> Spectrum:
        """The planted function's exact Fourier spectrum (noise excluded)."""
        # Π_{i∈T} x_i = Π (1 - χ_i)/2 = 2^-|T| Σ_{S⊆T} (-1)^|S| χ_S
        return Spectrum(self.n_features, *sets.superset_sums(
            self.members, self.weights, self.n_features, lambda s, t: (-1.0) ** t / 2.0**s
        ))


def _pack64(bits: np.ndarray) -> np.ndarray:
    """(B, 64·W) bool -> (B, W) uint64, bit i of word j = feature 64·j + i."""
    b, width = bits.shape
    weights = np.uint64(1) << np.arange(64, dtype=np.uint64)
    return (bits.reshape(b, width // 64, 64).astype(np.uint64) * weights).sum(axis=2, dtype=np.uint64)


def planted(
    n: int,
    kind: str = "hierarchical",
    *,
    k: int = 10,
    order: int = 5,
    noise: float = 0.0,
    seed: int = 0,
) -> PlantedGame:
    """A planted game with ``k`` random ``order``-sets over n features (see the module doc)."""
    if kind not in ("hierarchical", "peak"):
        raise ValueError(f"kind must be 'hierarchical' or 'peak', got {kind!r}")
    order = min(order, n)
    generator = seeded_rng(seed, f"planted-{kind}")
    bases = [np.sort(generator.choice(n, size=order, replace=False)) for _ in range(k)]
    if kind == "peak":
        members = np.array(bases, dtype=np.int32)
    else:
        subsets = {tuple(int(i) for i in c) for b in bases for r in range(1, order + 1) for c in itertools.combinations(b, r)}
        members = sets.from_tuples(sorted(subsets))
    weights = generator.normal(size=len(members))
    if noise > 0:
        # noise is given relative to the clean signal's standard deviation on uniform masks
        probe = PlantedGame(n, members, weights, seed=seed)
        scale = float(np.std(probe.clean(generator.random((4096, n)) < 0.5)))
        noise = noise * scale
    return PlantedGame(n, members, weights, noise=noise, seed=seed)
