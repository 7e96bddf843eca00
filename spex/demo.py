"""``make demo``: the main job on the embedded defaults.

Until the audit flows land (issue 5), the demo runs the interaction engine end to end: a planted
game with known interactions, explained by ProxySPEX and SPEX, validated on held-out masks against
the linear baseline, and the removal test — the same stages an audit chains on a real model.
"""

from __future__ import annotations

import math

import numpy as np

import spex
from spex import masks as mask_sampling
from spex.synthetic import planted


def main() -> None:
    n = 128
    game = planted(n, "hierarchical", k=6, order=4, noise=0.05, seed=1)
    holdout = mask_sampling.holdout(n, 1000, seed=2)
    budget = int(4 * n * math.log2(n))
    print(f"planted game: n={n} features, {len(game.mobius)} true interactions, budget {budget} masks\n")
    rows = []
    for method, kwargs in (("proxyspex", {}), ("spex", {"t": 4}), ("linear", {})):
        spex_budget = budget if method != "spex" else 20000
        ex = spex.explain(game, n, budget=spex_budget, method=method, seed=0, **kwargs)
        r2 = spex.faithfulness(game.clean, ex.spectrum, holdout)
        rows.append((method, ex.n_calls, r2, ex.seconds["outside_value_calls"], ex))
    print(f"{'method':<11}{'masks':>8}{'held-out R²':>14}{'seconds':>10}")
    for method, calls, r2, seconds, _ in rows:
        print(f"{method:<11}{calls:>8}{r2:>14.4f}{seconds:>10.2f}")
    best = rows[0][4]
    print("\ntop interactions (Möbius), ProxySPEX:")
    print(best.interactions("mobius", top=8).to_string(index=False))
    truth = sorted(game.mobius.items(), key=lambda kv: -abs(kv[1]))[:8]
    print("\nplanted (truth):")
    for members, value in truth:
        print(f"  {members!s:<24} {value:+.4f}")
    removal = spex.removal(best.spectrum, 3, "down")
    actual = float(game.clean(removal.mask(n)[None])[0] - game.clean(np.ones((1, n), dtype=bool))[0])
    print(f"\nremoval test: remove {removal.features} -> predicted change {removal.predicted_change:+.3f}, "
          f"actual {actual:+.3f} ({removal.method}, optimal={removal.optimal})")


if __name__ == "__main__":
    main()
