"""Antithetic pairs or not: ProxySPEX's sampling default, decided on exact ground truth over many seeds.

The ablation benchmark found one MiniLM sentence where the paired default fell to R² 0.43 at α = 2 (unpaired
0.91) — a single draw. This benchmark replaces single draws by many: for each subject it evaluates ALL 2^n
masks once (real MiniLM-sentiment values through the ablation engine and its store, and planted games), then
runs ProxySPEX with and without ``pair_complements`` on the same (n, budget, seed) for ``--seeds`` seeds and
scores each fit by its R² over every one of the 2^n masks (population R², no held-out sampling noise).

    python benchmarks/pairing.py                  # ~2-4 min on 2 CPU cores (MiniLM values are stored)
    python benchmarks/pairing.py --store DIR      # keep the ablation store between runs

Writes benchmarks/results/pairing.json and prints a table per α: mean / min R², paired wins, and the mean
paired-minus-unpaired difference with its standard error (seeds × subjects).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import spex  # noqa: E402
import spex.lenses  # noqa: E402
import spex.models  # noqa: E402
from spex.ablation import AblationEngine, AblationStore  # noqa: E402
from spex.data import load_prompts  # noqa: E402
from spex.engine.exact import all_masks  # noqa: E402
from spex.engine.synthetic import planted  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def minilm_subjects(store_root: str, count: int, max_n: int) -> list[dict[str, Any]]:
    """The first ``count`` bundled sentiment sentences with n <= max_n words, every mask's value computed."""
    model = spex.models.load("builtin:minilm-sentiment")
    engine = AblationEngine(AblationStore(store_root), progress=False, max_batch=512, token_budget=32768)
    subjects = []
    for sentence in load_prompts("sentiment"):
        vf = spex.lenses.features(model, sentence)
        if vf.n_features > max_n:
            continue
        masks = all_masks(vf.n_features)
        t0 = time.perf_counter()
        values = engine.values(vf, masks)
        subjects.append({"name": f"minilm: {sentence}", "n": vf.n_features, "masks": masks, "values": values,
                         "value_seconds": time.perf_counter() - t0})
        print(f"  {sentence!r}: n={vf.n_features}, {len(masks)} masks in {subjects[-1]['value_seconds']:.1f}s", flush=True)
        if len(subjects) == count:
            break
    return subjects


def planted_subjects(n: int) -> list[dict[str, Any]]:
    """Planted hierarchical and peak games on n features, noiseless and noisy (σ = 0.1 of the signal)."""
    masks = all_masks(n)
    out = []
    for kind in ("hierarchical", "peak"):
        for noise in (0.0, 0.1):
            game = planted(n, kind, k=6, order=4, noise=noise, seed=7)
            out.append({"name": f"planted {kind} noise={noise}", "n": n, "masks": masks, "values": game(masks)})
    return out


def score(subject: dict[str, Any], alpha: float, seed: int, paired: bool) -> float:
    """R² over all 2^n masks of ProxySPEX fitted on its own budget's values (looked up, never recomputed)."""
    n, masks, values = subject["n"], subject["masks"], subject["values"]
    index = subject.setdefault("_index", {m.tobytes(): i for i, m in enumerate(np.packbits(masks, axis=1))})

    def lookup(x: np.ndarray) -> np.ndarray:
        return values[[index[m.tobytes()] for m in np.packbits(x, axis=1)]]

    budget = max(32, int(round(alpha * n * math.log2(n))))
    ex = spex.explain(lookup, n, budget=budget, seed=seed, pair_complements=paired, uncertainty="cluster")
    return spex.engine.heldout.r2(values, ex.spectrum.predict(masks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alphas", type=float, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--sentences", type=int, default=8, help="MiniLM sentiment sentences (n <= --max-n)")
    parser.add_argument("--max-n", type=int, default=13)
    parser.add_argument("--planted-n", type=int, default=16)
    parser.add_argument("--store", help="ablation store folder (default: a temporary one)")
    parser.add_argument("--out", default=str(RESULTS / "pairing.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    with threadpool_limits(1), tempfile.TemporaryDirectory(prefix="spex-pairing-") as tmp:
        print("== values of every mask", flush=True)
        subjects = minilm_subjects(args.store or tmp, args.sentences, args.max_n) + planted_subjects(args.planted_n)
        rows = []
        for alpha in args.alphas:
            for s in subjects:
                paired = [score(s, alpha, seed, True) for seed in range(args.seeds)]
                unpaired = [score(s, alpha, seed, False) for seed in range(args.seeds)]
                rows.append({"subject": s["name"], "n": s["n"], "alpha": alpha,
                             "budget": max(32, int(round(alpha * s["n"] * math.log2(s["n"])))),
                             "paired": paired, "unpaired": unpaired})
            print(f"  α={alpha:g} done ({time.perf_counter() - started:.0f}s)", flush=True)

    summary = []
    for alpha in args.alphas:
        for family in ("minilm", "planted"):
            sel = [r for r in rows if r["alpha"] == alpha and r["subject"].startswith(family)]
            p = np.array([r["paired"] for r in sel]).ravel()
            u = np.array([r["unpaired"] for r in sel]).ravel()
            d = p - u
            summary.append({"family": family, "alpha": alpha, "fits": int(d.size),
                            "paired_mean": float(p.mean()), "paired_min": float(p.min()),
                            "unpaired_mean": float(u.mean()), "unpaired_min": float(u.min()),
                            "paired_wins": int((d > 0).sum()), "diff_mean": float(d.mean()),
                            "diff_se": float(d.std(ddof=1) / math.sqrt(d.size))})
    lines = ["| subjects | α | fits | paired mean R² (min) | unpaired mean R² (min) | paired better | mean paired − unpaired (± s.e.) |",
             "|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['family']} | {s['alpha']:g} | {s['fits']} | {s['paired_mean']:.3f} ({s['paired_min']:.3f}) | "
                     f"{s['unpaired_mean']:.3f} ({s['unpaired_min']:.3f}) | {s['paired_wins']}/{s['fits']} | "
                     f"{s['diff_mean']:+.4f} ± {s['diff_se']:.4f} |")
    table = "\n".join(lines)
    print("\n" + table)
    out = {"seeds": args.seeds, "alphas": args.alphas, "rows": rows, "summary": summary, "table": table,
           "subjects": [{"name": s["name"], "n": s["n"]} for s in subjects],
           "seconds": time.perf_counter() - started,
           "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
