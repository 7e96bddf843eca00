"""The SPEX paper's Sentiment table, reproduced in its layout (issue 14): held-out R² by review length.

Kang et al. (2025, "SPEX: Scaling Feature Interaction Explanations for LLMs") explain a sentiment
classifier on movie reviews of 8-15, 16-31 and 32-63 words, with the words as features, and report the
R² of each explanation on uniformly drawn held-out masks at SPEX's query counts for b = 4 and b = 6
(1,008 / 1,344 / 1,728 and 4,032 / 5,376 / 6,912 per bucket). This script does the same here:

* reviews: ``spex/data/reviews.jsonl`` (20 per bucket, written for this project; ``spex.data.load_reviews``);
* model and value function: ``builtin:minilm-sentiment`` through the features lens as an audit builds it
  (``spex.lenses.features``: words = whitespace-delimited, a dropped word is removed, value = the logit of
  the class predicted on the full review);
* queries: for each review and b, the number of masks of the SPEX design at (n, b, t = 5, C = 3), which is
  the same count in ours and in shapiq's (asserted): C·(p+1)·2^b, p the BCH parity length at n. It equals
  the paper's bucket figure except at n = 12-15 (1,344 / 5,376, not 1,008 / 4,032) and n = 32-35 (1,344 /
  5,376, not 1,728 / 6,912), where the code length changes inside a bucket; every method of a row gets that
  same count (the JSON holds it per review);
* rows: spex ``spex`` (method option b), spex ``proxyspex`` (unpaired uniform masks, so that ``linear``
  sees exactly the same masks), spex ``linear`` (LIME-like: a first-order least-squares fit on uniform
  masks), and shapiq 1.4.1's ``SPEX`` (soft decoder, t = 5; seeded with ``np.random.seed``, as its
  ``random_state`` does not reach its masks), each on its own masks through one ablation engine and store,
  so the model never sees a mask twice (shapiq's coalitions and ours are looked up in the store first);
* R²: on ``--holdout`` (default 1,000, as in the paper) uniform held-out masks per review, real model calls;
* the methods run their algorithm even where 2^n <= the budget (n <= 10 at b = 4, n <= 12 at b = 6): an
  audit would then take all 2^n masks (exact, R² = 1), which compares nothing.

Mean ± standard error across reviews per bucket, printed as the paper's table (rows = methods, columns =
buckets, one block per b) with the paper's DistilBERT numbers as a reference row; JSON under
benchmarks/results/ (written after every review, so an interrupted run keeps what it measured).

    python benchmarks/sentiment_table.py                          # all 60 reviews (hours on 2 CPU cores)
    python benchmarks/sentiment_table.py --per-bucket 4           # an evenly spaced subset per bucket
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
from spex.data import REVIEW_BUCKETS, load_reviews  # noqa: E402
from spex.engine import sampling as mask_sampling  # noqa: E402
from spex.engine import sets  # noqa: E402
from spex.engine.batching import MaskEvaluator  # noqa: E402
from spex.engine.explainer import get_method  # noqa: E402
from spex.engine.heldout import r2  # noqa: E402
from spex.engine.methods.base import StageTimer  # noqa: E402
from spex.engine.methods.spex_coded import plan_design  # noqa: E402
from spex.engine.synthetic import PlantedGame  # noqa: E402
from spex.settings import apply_offline_defaults  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "builtin:minilm-sentiment"
BUCKETS = list(REVIEW_BUCKETS)
PAPER_BUDGETS = {4: (1008, 1344, 1728), 6: (4032, 5376, 6912)}
# Kang et al. 2025, Sentiment (DistilBERT), R² on held-out masks per bucket.
PAPER = {4: {"SPEX": (0.970, 0.894, 0.751), "LIME": (0.832, 0.748, 0.665)},
         6: {"SPEX": (0.992, 0.947, 0.874), "LIME": (0.834, 0.752, 0.672)}}
METHODS = {"spex": "spex SPEX", "proxyspex": "spex ProxySPEX", "linear": "linear (LIME-like)",
           "shapiq_spex": "shapiq 1.4.1 SPEX"}


def now() -> float:
    return time.perf_counter()


class CountingGame:
    """The engine-bound value function as a shapiq game: every coalition goes through the ablation
    engine (store first), and the seconds inside it are counted so shapiq's own time can be reported."""

    def __init__(self, bound: Any) -> None:
        self.bound, self.seconds, self.requested = bound, 0.0, 0

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        t0 = now()
        out = self.bound(np.asarray(coalitions, dtype=bool))
        self.seconds += now() - t0
        self.requested += len(coalitions)
        return out


def run_ours(bound: Any, n: int, budget: int, method: str, seed: int, holdout: np.ndarray, y_holdout: np.ndarray,
             **options: Any) -> dict[str, Any]:
    """The method's own algorithm on ``budget`` masks (what ``spex.explain`` runs when 2^n > budget)."""
    algorithm = get_method(method, **options)
    evaluator = MaskEvaluator(bound, n)
    before = bound.engine.total.computed
    t0 = now()
    with threadpool_limits(1):
        spectrum, diagnostics = algorithm.fit(evaluator, n, budget, seed, StageTimer())
    seconds = now() - t0 - evaluator.seconds
    return {"r2": r2(y_holdout, spectrum.predict(holdout)), "seconds": seconds, "queries": int(budget),
            "unique_masks": int(evaluator.n_calls), "new_calls": int(bound.engine.total.computed - before),
            "support": len(spectrum)}


def run_shapiq_spex(bound: Any, n: int, budget: int, seed: int, holdout: np.ndarray,
                    y_holdout: np.ndarray) -> dict[str, Any]:
    import shapiq

    game = CountingGame(bound)
    before = bound.engine.total.computed
    np.random.seed(seed)  # shapiq's SPEX draws its subsampling matrices from numpy's global generator
    approximator = shapiq.SPEX(n=n, index="FBII", max_order=None, random_state=seed)
    t0 = now()
    try:
        with threadpool_limits(1):
            values = approximator.approximate(budget, game)
    except Exception as exc:  # reported in the row, not hidden
        return {"error": f"{type(exc).__name__}: {exc}", "queries": game.requested}
    seconds = now() - t0 - game.seconds
    mobius = [(tuple(int(i) for i in k), float(values.values[j])) for k, j in values.interaction_lookup.items()]
    mobius = [(k, v) for k, v in mobius if v != 0]
    if mobius:
        pred = PlantedGame(n, sets.from_tuples([k for k, _ in mobius]), np.array([v for _, v in mobius])).clean(holdout)
    else:
        pred = np.zeros(len(holdout))
    return {"r2": r2(y_holdout, pred), "seconds": seconds, "queries": int(game.requested),
            "new_calls": int(bound.engine.total.computed - before), "support": len(mobius)}


def spex_queries(n: int, b: int) -> int:
    """Masks of the SPEX design at (n, b, t = 5, C = 3): ours, checked against shapiq's formula."""
    ours = plan_design(n, 1 << 40, b=b).n_masks
    from shapiq.approximator.sparse.base import SubsampledSignalFourier

    query_args = {"query_method": "complex", "num_subsample": 3, "delays_method_source": "joint-coded",
                  "subsampling_method": "qsft", "delays_method_channel": "identity-siso", "num_repeat": 1, "t": 5}
    theirs = SubsampledSignalFourier.get_number_of_samples(n, b, 5, 2, query_args)
    if ours != theirs:
        raise RuntimeError(f"n={n}, b={b}: our SPEX design has {ours} masks, shapiq's {theirs}")
    return int(ours)


def review(model: Any, row: dict[str, str], engine: AblationEngine, args: argparse.Namespace) -> dict[str, Any]:
    """One review: its held-out values, then every method at every b."""
    t_start = now()
    vf = spex.lenses.features(model, row["text"])
    n = vf.n_features
    bound = engine.bind(vf)
    holdout = mask_sampling.holdout(n, args.holdout, args.seed)
    y_holdout = bound(holdout)
    out: dict[str, Any] = {"id": row["id"], "bucket": row["bucket"], "label": row["label"], "n": n,
                           "predicted": vf.target, "full_value": vf.full_value, "holdout": len(holdout),
                           "holdout_distinct": int(len(np.unique(holdout, axis=0))),
                           "holdout_value_std": float(np.std(y_holdout)), "by_b": {}}
    for b in args.bs:
        queries = spex_queries(n, b)
        cell: dict[str, Any] = {"queries": queries}
        for method in args.methods:
            if method == "shapiq_spex" and b not in args.shapiq_bs:
                cell[method] = {"skipped": f"shapiq's SPEX runs at b in {args.shapiq_bs} only (--shapiq-bs)"}
            elif method == "shapiq_spex":
                cell[method] = run_shapiq_spex(bound, n, queries, args.seed, holdout, y_holdout)
            elif method == "spex":
                cell[method] = run_ours(bound, n, queries, "spex", args.seed, holdout, y_holdout, b=b)
            elif method == "proxyspex":
                cell[method] = run_ours(bound, n, queries, "proxyspex", args.seed, holdout, y_holdout,
                                        pair_complements=False)
            else:
                cell[method] = run_ours(bound, n, queries, method, args.seed, holdout, y_holdout)
        out["by_b"][str(b)] = cell
        print(f"  {row['id']:<8} n={n:<3} b={b} q={queries:<5} "
              + "  ".join(f"{m}={cell[m].get('r2', float('nan')):.3f}" for m in args.methods), flush=True)
    out["seconds"] = now() - t_start
    return out


def summarise(rows: list[dict[str, Any]], bs: list[int], methods: list[str]) -> dict[str, Any]:
    """Mean ± standard error of R² per (b, method, bucket), with the query counts seen."""
    summary: dict[str, Any] = {}
    for b in bs:
        block: dict[str, Any] = {}
        for method in methods:
            per_bucket = {}
            for bucket in BUCKETS:
                vals = [r["by_b"][str(b)][method]["r2"] for r in rows
                        if r["bucket"] == bucket and "r2" in r["by_b"][str(b)][method]]
                if vals:
                    mean = float(np.mean(vals))
                    se = float(np.std(vals, ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else float("nan")
                    per_bucket[bucket] = {"mean": mean, "se": se, "reviews": len(vals), "min": float(np.min(vals))}
            block[method] = per_bucket
        block["queries"] = {bucket: sorted({r["by_b"][str(b)]["queries"] for r in rows if r["bucket"] == bucket})
                            for bucket in BUCKETS}
        summary[str(b)] = block
    return summary


def markdown(summary: dict[str, Any], rows: list[dict[str, Any]], bs: list[int], methods: list[str]) -> str:
    lines = []
    counts = {bucket: sum(r["bucket"] == bucket for r in rows) for bucket in BUCKETS}
    for b in bs:
        block = summary[str(b)]
        head = " | ".join(f"{bucket} words ({counts[bucket]} reviews)" for bucket in BUCKETS)
        lines += [f"**b = {b}**", "", f"| method | {head} |", "|---|" + "---|" * len(BUCKETS)]
        lines.append("| queries (paper) | " + " | ".join(f"{q:,}" for q in PAPER_BUDGETS[b]) + " |")
        lines.append("| queries (here, per review) | " + " | ".join(
            " / ".join(f"{q:,}" for q in block["queries"][bucket]) or "–" for bucket in BUCKETS) + " |")
        for method in methods:
            cells = []
            for bucket in BUCKETS:
                c = block[method].get(bucket)
                if c is None:
                    cells.append("–")
                else:
                    few = f" ({c['reviews']} of {counts[bucket]})" if c["reviews"] != counts[bucket] else ""
                    se = f" ± {c['se']:.3f}" if c["reviews"] > 1 else ""
                    cells.append(f"{c['mean']:.3f}{se}{few}")
            lines.append(f"| {METHODS[method]} | " + " | ".join(cells) + " |")
        for name, values in PAPER[b].items():
            lines.append(f"| paper {name} (DistilBERT) | " + " | ".join(f"{v:.3f}" for v in values) + " |")
        lines.append("")
    return "\n".join(lines)


def pick(rows: list[dict[str, str]], per_bucket: int, buckets: list[str]) -> list[dict[str, str]]:
    """All reviews, or ``per_bucket`` evenly spaced ones of each bucket (file order), deterministically;
    interleaved across buckets (short, medium, long, short, ...), so a run stopped early has measured
    about as many reviews in every bucket."""
    chosen = []
    for bucket in buckets:
        mine = [r for r in rows if r["bucket"] == bucket]
        k = min(per_bucket, len(mine))
        idx = sorted({int(round(i)) for i in np.linspace(0, len(mine) - 1, k)}) if k < len(mine) else range(len(mine))
        chosen.append([mine[i] for i in idx])
    return [r for group in zip(*chosen) for r in group] + [r for group in chosen for r in group[min(map(len, chosen)):]]


def resumed(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Reviews of ``--resume`` measured at the same holdout and seed, at every b asked for now, and with every
    method asked for now at those b (a review whose shapiq run was skipped at a b now asked for is measured again:
    its model values come from the store, so only the fits and shapiq's decoding run)."""
    if not args.resume or not Path(args.resume).is_file():
        return {}
    old = json.loads(Path(args.resume).read_text())
    same = old["meta"]["args"]["holdout"] == args.holdout and old["meta"]["args"]["seed"] == args.seed
    shapiq_bs = args.bs if args.shapiq_bs is None else args.shapiq_bs

    def complete(r: dict[str, Any]) -> bool:
        for b in args.bs:
            got = r["by_b"].get(str(b))
            if got is None or any(m not in got for m in args.methods):
                return False
            if "shapiq_spex" in args.methods and b in shapiq_bs and "skipped" in got["shapiq_spex"]:
                return False
        return True

    return {r["id"]: r for r in old["reviews"] if complete(r)} if same else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-bucket", type=int, default=20, help="reviews per bucket (default: all 20)")
    parser.add_argument("--buckets", nargs="+", default=BUCKETS, choices=BUCKETS)
    parser.add_argument("--bs", type=int, nargs="+", default=[4, 6], help="SPEX's b (sets the query counts)")
    parser.add_argument("--shapiq-bs", type=int, nargs="*", default=None,
                        help="the b at which shapiq's SPEX runs (default: every b); its decoding takes minutes per "
                             "review at b = 6 on 2 CPU cores (907 s at n = 23 in a trial run)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--holdout", type=int, default=1000, help="uniform held-out masks per review")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the model calls")
    parser.add_argument("--max-batch", type=int, default=64, help="masks per forward")
    parser.add_argument("--store", default=None, help="ablation store (default: a temp dir); a rerun on the same "
                                                       "store makes no model call for what it measured")
    parser.add_argument("--out", default=str(RESULTS / "sentiment_table.json"))
    parser.add_argument("--resume", default=None, help="a JSON this script wrote: its reviews measured with the same "
                                                       "holdout and seed are taken from it, not run again")
    args = parser.parse_args()
    if args.shapiq_bs is None:
        args.shapiq_bs = list(args.bs)
    apply_offline_defaults()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    reviews = pick(load_reviews(), args.per_bucket, args.buckets)
    print(f"{len(reviews)} reviews ({args.per_bucket} per bucket at most), b = {args.bs}, holdout {args.holdout}; "
          f"load average {load_start}", flush=True)
    t0 = now()
    model = spex.models.load(MODEL)
    load_seconds = now() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    started = now()
    with tempfile.TemporaryDirectory(prefix="spex-sentiment-store-") as tmp:
        engine = AblationEngine(AblationStore(args.store or tmp), max_batch=args.max_batch, progress=False)
        done = resumed(args)
        for row in reviews:
            if row["id"] in done:
                rows.append(done[row["id"]])
                print(f"  {row['id']:<8} taken from {args.resume}", flush=True)
            else:
                before = engine.total.computed
                result = review(model, row, engine, args)
                result["model_calls"] = int(engine.total.computed - before)
                rows.append(result)
            from importlib.metadata import version

            meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "shapiq": version("shapiq"), "torch_threads": torch.get_num_threads(),
                    "model": model.describe(), "model_load_seconds": load_seconds, "args": vars(args),
                    "load_average_at_start": load_start, "load_average_now": os.getloadavg(),
                    "seconds": now() - started, "reviews_done": len(rows), "reviews_planned": len(reviews),
                    "date": time.strftime("%Y-%m-%d %H:%M")}
            summary = summarise(rows, args.bs, args.methods)
            out.write_text(json.dumps({"meta": meta, "summary": summary, "reviews": rows}, indent=1, default=float))
    print("\n" + markdown(summary, rows, args.bs, args.methods))
    print(f"total {now() - started:.0f}s, {sum(r['model_calls'] for r in rows)} model calls; load average "
          f"{os.getloadavg()}; wrote {out}")


if __name__ == "__main__":
    main()
