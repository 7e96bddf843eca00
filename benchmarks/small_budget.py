"""ProxySPEX at small budgets: the low-order choice (``low_order="auto"``, the default) against the
proxy alone (``low_order="off"``) and the linear floor, on exact ground truth (issue 15).

Planted games (:func:`spex.engine.synthetic.planted`, 0.1 x signal sd of hashed per-mask noise) over
n = 10, 12 and 14 features, where all 2^n masks are enumerable: the R² of each surrogate against the
game's clean values on every mask, at 32, 64, 128 and 256 masks (below 2^n, so every method samples),
over ``--seeds`` seeds. Per (game, budget): the mean R² of each method, how often "auto" is at least
the proxy alone, and the mean ratio of their unexplained variance (1 - R²; below 1: "auto" leaves less).

    python benchmarks/small_budget.py               # ~2 min on 2 cores
    python benchmarks/small_budget.py --seeds 3 --out /tmp/s.json

Writes ``benchmarks/results/small_budget.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

import spex
from spex.engine.exact import all_masks
from spex.engine.heldout import r2
from spex.engine.synthetic import planted

RESULTS = Path(__file__).resolve().parent / "results"
GAMES = (("hierarchical", 10, 3, 3), ("peak", 10, 3, 3), ("hierarchical", 12, 4, 3), ("peak", 12, 4, 3),
         ("hierarchical", 14, 4, 4), ("peak", 14, 4, 4))  # (kind, n, planted sets, their order)
BUDGETS = (32, 64, 128, 256)
METHODS = {"auto": ("proxyspex", {}), "proxy alone": ("proxyspex", {"low_order": "off"}), "linear": ("linear", {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--out", default=str(RESULTS / "small_budget.json"))
    args = parser.parse_args()
    rows, started = [], time.perf_counter()
    for kind, n, k, order in GAMES:
        game = planted(n, kind, k=k, order=order, noise=args.noise, seed=11)
        masks = all_masks(n)
        truth = game.clean(masks)
        for budget in BUDGETS:
            scores: dict[str, list[float]] = {m: [] for m in METHODS}
            chosen: list[str] = []
            for seed in range(args.seeds):
                for name, (method, options) in METHODS.items():
                    ex = spex.explain(game, n, budget=budget, method=method, seed=seed, uncertainty=None, **options)
                    scores[name].append(r2(truth, ex.spectrum.predict(masks)))
                    if name == "auto":
                        chosen.append((ex.diagnostics.get("low_order") or {}).get("chosen", "proxy (split >= 64 rows)"))
            auto, alone = np.array(scores["auto"]), np.array(scores["proxy alone"])
            row = {"game": kind, "n": n, "planted_sets": k, "planted_order": order, "budget": budget,
                   "seeds": args.seeds, "mean_r2": {m: float(np.mean(v)) for m, v in scores.items()},
                   "r2": scores, "auto_at_least_alone": int(np.sum(auto >= alone - 1e-12)),
                   "unexplained_ratio_auto_over_alone": float(np.mean((1 - auto) / np.maximum(1 - alone, 1e-12))),
                   "chosen": {c: chosen.count(c) for c in sorted(set(chosen))}}
            rows.append(row)
            print(f"| {kind} | {n} | {budget} | " + " | ".join(f"{row['mean_r2'][m]:.3f}" for m in METHODS)
                  + f" | {row['auto_at_least_alone']}/{args.seeds} | {row['unexplained_ratio_auto_over_alone']:.2f} | "
                  + ", ".join(f"{c} {v}" for c, v in row["chosen"].items()) + " |", flush=True)
    out = {"machine": {"platform": platform.platform(), "python": platform.python_version()},
           "noise": args.noise, "seeds": args.seeds, "seconds": time.perf_counter() - started, "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
