"""Engine benchmark: our ProxySPEX / SPEX vs shapiq 1.4.1's, side by side, same games, same budget,
same held-out masks, one run. Prints a table and writes JSON under benchmarks/results/.
Our times are the median of 3 identical runs (see ``run_ours``); shapiq's a single run.

    python benchmarks/engine.py                     # the default grid (see --help)
    python benchmarks/engine.py --ns 64 128 --kinds peak --quick
    python benchmarks/engine.py --scale 2048:30000 --before-tree /tmp/before \
        --out benchmarks/results/engine_scale_2048.json   # issue 14: before vs after, shapiq SPEX capped
                                                          # (benchmarks/README.md has the 4,096 commands)
    python benchmarks/engine.py --scale 2048:30000 --kinds hierarchical --variants --before-tree /tmp/before \
        --out benchmarks/results/engine_scale_variants.json   # issue 14: what each setting gives

Faithfulness is R² on 1,000 held-out uniform masks against the noiseless planted function.
"Seconds" are wall seconds outside value calls (the games are cheap; the model would dominate).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import spex  # noqa: E402
from spex.engine import sampling as mask_sampling  # noqa: E402
from spex.engine import sets  # noqa: E402
from spex.engine.synthetic import PlantedGame, planted  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class TimedGame:
    """Counts and times value calls so 'seconds outside value calls' is the same for both sides."""

    def __init__(self, game: PlantedGame):
        self.game = game
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.game(np.asarray(masks, dtype=bool))
        self.seconds += time.perf_counter() - t0
        self.calls += len(masks)
        return out


# The fits are timed with the fixed-support cluster sandwich (0.01-0.02 s), as every recorded table here
# was: shapiq computes no uncertainty. The audits' default at small sizes, the selection bootstrap
# (spex.engine.bootstrap: 20 refits), is costed in benchmarks/intervals.py.
FIT_UNCERTAINTY = "cluster"

def mobius_r2(n: int, mobius: dict[tuple[int, ...], float], game: PlantedGame, holdout: np.ndarray) -> float:
    """R² of a Möbius expansion (as shapiq returns it) on the held-out masks."""
    items = [(k, v) for k, v in mobius.items() if v != 0]
    members = sets.from_tuples([k for k, _ in items]) if items else np.zeros((0, 0), np.int32)
    surrogate = PlantedGame(n, members, np.array([v for _, v in items]))
    return spex.engine.heldout.r2(game.clean(holdout), surrogate.clean(holdout))


def run_ours(game: PlantedGame, n: int, budget: int, method: str, seed: int, holdout: np.ndarray,
             repeats: int = 3, **options: Any) -> dict[str, Any]:
    """Our run, ``repeats`` times (same seed, so the same result): the median wall time resists the
    load spikes of a shared 2-core machine, which a single sub-second run does not; shapiq's runs
    last 10-100 s and average over them by themselves."""
    seconds: list[float] = []
    for _ in range(repeats):
        timed = TimedGame(game)
        t0 = time.perf_counter()
        ex = spex.explain(timed, n, budget=budget, method=method, seed=seed, uncertainty=FIT_UNCERTAINTY,
                      **options)
        seconds.append(time.perf_counter() - t0 - timed.seconds)
        if seconds[0] > 10.0:  # a long run averages over load spikes by itself
            break
    return {
        "r2": spex.engine.heldout.r2(game.clean(holdout), ex.spectrum.predict(holdout)),
        "seconds": float(np.median(seconds)),
        "seconds_all": seconds,
        "calls": ex.n_calls,
        "support": len(ex.spectrum),
        "diagnostics": {k: v for k, v in ex.diagnostics.items() if k not in ("selection_curve", "proxy_candidates")},
    }


def run_shapiq(game: PlantedGame, n: int, budget: int, method: str, seed: int, holdout: np.ndarray, **kwargs: Any) -> dict[str, Any]:
    import shapiq

    timed = TimedGame(game)
    np.random.seed(seed)  # shapiq's SPEX masks ignore random_state; seed them the only way they listen
    cls = shapiq.ProxySPEX if method == "proxyspex" else shapiq.SPEX
    approximator = cls(n=n, index="FBII", max_order=None, random_state=seed, **kwargs)
    t0 = time.perf_counter()
    with threadpool_limits(1):  # the same single-threaded math as ours (spex.explain's default)
        values = approximator.approximate(budget, timed)
    total = time.perf_counter() - t0
    mobius = {tuple(int(i) for i in k): float(values.values[j]) for k, j in values.interaction_lookup.items()}
    return {"r2": mobius_r2(n, mobius, game, holdout), "seconds": total - timed.seconds, "calls": timed.calls,
            "support": len(mobius)}


# -- the scale section (issue 14): every run in a fresh process, so that peak memory is its own, a
# time cap can stop it, and the "before" side can import another checkout's spex -------------------
CHILD = r"""
import json, resource, sys, time
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["tree"])
import numpy as np
from threadpoolctl import threadpool_limits
import spex
from spex.engine import sampling as mask_sampling, sets
from spex.engine.heldout import r2
from spex.engine.synthetic import PlantedGame, planted

n, budget = spec["n"], spec["budget"]
if spec.get("lgb") or spec.get("refit") == "qr":  # variants that are settings, not options (docs/engine.md)
    from spex.engine.methods import proxyspex as P
    base = P._lgb_params
    P._lgb_params = lambda *a, **k: {**base(*a, **k), **spec.get("lgb", {})}
    if spec.get("refit") == "qr":  # the refit before issue 14: Householder QR for selection, gelsy for the refit
        from scipy.linalg import qr
        from spex.engine.linalg import independent_columns, least_squares

        def prefix_factor(design, y):
            q, r = np.linalg.qr(design)
            kept = independent_columns(design, r)
            if not kept.all():
                q, r = np.linalg.qr(design[:, kept])
            return r, q.T @ y, kept

        P.prefix_factor, P.least_squares_tall = prefix_factor, least_squares
game = planted(n, spec["kind"], seed=spec["game_seed"])
holdout = mask_sampling.holdout(n, 1000, seed=10_000 + n)
calls = {"wall": 0.0, "cpu": 0.0, "count": 0}

def value(masks):
    wall, cpu = time.perf_counter(), time.process_time()
    out = game(np.asarray(masks, dtype=bool))
    calls["wall"] += time.perf_counter() - wall
    calls["cpu"] += time.process_time() - cpu
    calls["count"] += len(masks)
    return out

wall, cpu = time.perf_counter(), time.process_time()
out = {}
if spec["side"] == "shapiq":
    import shapiq
    np.random.seed(spec["seed"])  # shapiq's SPEX masks ignore random_state
    approximator = shapiq.SPEX(n=n, index="FBII", max_order=None, random_state=spec["seed"], decoder_type="soft",
                               degree_parameter=spec["t"])
    with threadpool_limits(1):
        values = approximator.approximate(budget, value)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    items = [(k, float(values.values[j])) for k, j in values.interaction_lookup.items() if values.values[j] != 0]
    members = sets.from_tuples([k for k, _ in items]) if items else np.zeros((0, 0), np.int32)
    prediction = PlantedGame(n, members, np.array([v for _, v in items])).clean(holdout)
    out["support"] = len(items)
else:
    # (no uncertainty= here: this worker also runs older trees; at these sizes "auto" is the cluster sandwich)
    ex = spex.explain(value, n, budget=budget, method=spec["method"], seed=spec["seed"], threads=spec.get("threads", 1),
                      **spec["options"])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    prediction = ex.spectrum.predict(holdout)
    out["support"] = len(ex.spectrum)
    out["stages"] = {k: v for k, v in ex.seconds.items()}
    out["diagnostics"] = {k: v for k, v in ex.diagnostics.items() if k not in ("selection_curve", "proxy_candidates")}
out.update(r2=r2(game.clean(holdout), prediction), seconds=wall - calls["wall"], cpu_seconds=cpu - calls["cpu"],
           calls=calls["count"], peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
print("RESULT " + json.dumps(out, default=float))
"""


def run_child(tree: str, cap: float, **spec: Any) -> dict[str, Any]:
    """One run in a fresh interpreter importing ``tree``'s spex; {"note": "did not finish in N s"} past ``cap``."""
    load = os.getloadavg()[0]
    env = {**os.environ, "PYTHONPATH": tree}
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps({"tree": tree, **spec})], env=env, cwd=tree,
                              capture_output=True, text=True, timeout=cap)
    except subprocess.TimeoutExpired:
        return {"note": f"did not finish in {cap:.0f} s", "load_start": load}
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        return {"note": f"error: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}",
                "load_start": load}
    return {**json.loads(lines[-1][len("RESULT "):]), "load_start": load, "load_end": os.getloadavg()[0]}


def scale_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """ProxySPEX after (this checkout) and before (``--before-tree``), then our SPEX and shapiq's SPEX
    (capped at ``--shapiq-cap`` s), at each (n, masks) of ``--scale``, on both planted games."""
    from spex.engine.methods.bch import parameter_search

    here = str(Path(__file__).resolve().parents[1])
    rows = []
    for size in args.scale:
        n, budget = (int(v) for v in size.split(":"))
        for kind in args.kinds:
            common = {"n": n, "kind": kind, "game_seed": args.seed + n, "seed": args.seed, "options": {}}
            row: dict[str, Any] = {"section": "scale-proxyspex", "kind": kind, "n": n, "noise": 0.0, "budget": budget,
                                   "ours": run_child(here, args.before_cap, side="ours", method="proxyspex",
                                                     budget=budget, **common)}
            if args.before_tree:
                row["before"] = run_child(args.before_tree, args.before_cap, side="ours", method="proxyspex",
                                          budget=budget, **common)
            rows.append(row)
            print_scale(row)
            _, length, dim = parameter_search(n, 5)
            spex_budget = 3 * (length - dim + 1) * 2**8  # the reference b = 8, t = 5, C = 3, as in the spex section
            row = {"section": "scale-spex", "kind": kind, "n": n, "noise": 0.0, "budget": spex_budget,
                   "ours": run_child(here, args.before_cap, side="ours", method="spex", budget=spex_budget, **common)}
            if args.shapiq_cap > 0:
                row["shapiq"] = run_child(here, args.shapiq_cap, side="shapiq", budget=spex_budget, t=5, **common)
            rows.append(row)
            print_scale(row)
    return rows


VARIANTS: list[tuple[str, dict[str, Any]]] = [  # (name, child spec); "before" runs --before-tree's code
    ("before: main (all features, column-wise, QR/gelsy refit)", {"before": True}),
    ("screen, first pass only", {"options": {"screen_rounds": 1}}),
    ("screen + residual passes (default)", {"options": {}}),
    ("screen, column-wise histograms", {"options": {}, "lgb": {"force_col_wise": True, "force_row_wise": False}}),
    ("screen, GOSS", {"options": {}, "lgb": {"data_sample_strategy": "goss"}}),
    ("screen, bagging 0.5", {"options": {}, "lgb": {"bagging_fraction": 0.5, "bagging_freq": 1}}),
    ("screen, max_trees 300", {"options": {"max_trees": 300}}),
    ("screen, QR/gelsy refit (before)", {"options": {}, "refit": "qr"}),
    ("screen, 2 LightGBM + BLAS threads", {"options": {"num_threads": 2}, "threads": 2}),
    ("all features, row-wise histograms", {"options": {"screen": "off"}, "lgb": {"force_col_wise": False, "force_row_wise": True}}),
]


def variant_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """What each change gives on its own: ProxySPEX variants at the first (n, masks) of ``--scale``."""
    here = str(Path(__file__).resolve().parents[1])
    n, budget = (int(v) for v in args.scale[0].split(":"))
    rows = []
    for kind in args.kinds:
        for name, spec in VARIANTS:
            if spec.get("before") and (not args.before_tree or args.skip_before_variant):
                continue
            tree = args.before_tree if spec.get("before") else here
            extra = {k: v for k, v in spec.items() if k != "before"}
            extra.setdefault("options", {})
            result = run_child(tree, args.before_cap, side="ours", method="proxyspex", budget=budget, n=n, kind=kind,
                               game_seed=args.seed + n, seed=args.seed, **extra)
            rows.append({"section": "variant", "variant": name, "kind": kind, "n": n, "budget": budget, "ours": result})
            r = result
            print(f"{kind:<12} {name:<55} " + (r["note"] if "note" in r else f"R²={r['r2']:.6f} {r['seconds']:.1f}s "
                  f"(cpu {r['cpu_seconds']:.1f}s) stages {({k: round(v, 1) for k, v in r['stages'].items()})} "
                  f"load {r['load_start']:.1f}"), flush=True)
    return rows


def variants_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| game | variant | R² | s outside value calls | CPU s | fit s | refit s | screening s | trees | load at start |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        v = r["ours"]
        if "note" in v:
            lines.append(f"| {r['kind']} | {r['variant']} | – | {v['note']} | – | – | – | – | – | {v['load_start']:.1f} |")
            continue
        st = v["stages"]
        lines.append(f"| {r['kind']} | {r['variant']} | {v['r2']:.6f} | {v['seconds']:.1f} | {v['cpu_seconds']:.1f} | "
                     f"{st.get('fit', 0):.1f} | {st.get('refit', 0):.1f} | {st.get('screening', 0):.1f} | "
                     f"{v['diagnostics'].get('proxy_trees')} | {v['load_start']:.1f} |")
    return "\n".join(lines)


def print_scale(row: dict[str, Any]) -> None:
    parts = [f"{row['section']:<16} {row['kind']:<12} n={row['n']:<5} masks={row['budget']:<6}"]
    for side in ("ours", "before", "shapiq"):
        r = row.get(side)
        if r is not None:
            parts.append(f"{side}: " + (r["note"] if "note" in r else
                         f"R²={r['r2']:.6f} {r['seconds']:.1f}s (cpu {r['cpu_seconds']:.1f}s) {r['peak_rss_gb']:.2f}GB"
                         f" load {r['load_start']:.1f}"))
    print("  ".join(parts), flush=True)


def scale_markdown(rows: list[dict[str, Any]], ours_label: str = "spex (this branch)") -> str:
    """The scale table for benchmarks/README.md: one line per side."""
    lines = ["| method | game | n | masks | side | R² | s outside value calls | CPU s | peak RSS GB | screened features | trees | load at start | after's speed-up over this side |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        method = r["section"].removeprefix("scale-")
        after = r.get("ours", {})
        for side, label in (("ours", ours_label), ("before", "spex before (main)"), ("shapiq", "shapiq 1.4.1")):
            v = r.get(side)
            if v is None:
                continue
            if "note" in v:
                lines.append(f"| {method} | {r['kind']} | {r['n']} | {r['budget']} | {label} | – | {v['note']} | – | – | – | – | "
                             f"{v['load_start']:.1f} | – |")
                continue
            diag = v.get("diagnostics", {})
            ratio = "–"
            if side != "ours" and "seconds" in after:
                ratio = f"{v['seconds'] / after['seconds']:.1f}x faster (CPU {v['cpu_seconds'] / after['cpu_seconds']:.1f}x)"
            screened = diag.get("screened_features")
            lines.append(f"| {method} | {r['kind']} | {r['n']} | {r['budget']} | {label} | {v['r2']:.6f} | {v['seconds']:.1f} | "
                         f"{v['cpu_seconds']:.1f} | {v['peak_rss_gb']:.2f} | {' → '.join(map(str, screened)) if screened else '–'} | "
                         f"{diag.get('proxy_trees', '–')} | {v['load_start']:.1f} | {ratio} |")
    return "\n".join(lines)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table for benchmarks/README.md."""
    lines = ["| section | game | n | noise | budget | ours R² | shapiq R² | ours s | shapiq s | time ratio | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o, p = r.get("ours", {}), r.get("shapiq", {})
        fmt = lambda v, f: (f % v) if isinstance(v, (int, float)) and v == v else "–"  # noqa: E731
        ratio = o["seconds"] / p["seconds"] if o and p else float("nan")
        lines.append(f"| {r['section']} | {r['kind']} | {r['n']} | {r['noise']} | {r['budget']} | {fmt(o.get('r2'), '%.4f')} | "
                     f"{fmt(p.get('r2'), '%.4f')} | {fmt(o.get('seconds'), '%.2f')} | {fmt(p.get('seconds'), '%.2f')} | "
                     f"{fmt(ratio, '%.3f')} | {r.get('note', '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ns", type=int, nargs="+", default=[64, 128, 512, 1024])
    parser.add_argument("--kinds", nargs="+", default=["hierarchical", "peak"])
    parser.add_argument("--noises", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--alpha", type=float, default=8.0, help="budget = alpha * n * log2(n)")
    parser.add_argument("--budget-curve-ns", type=int, nargs="*", default=[128],
                        help="n at which R² vs budget (alpha 2,4,8; shapiq at 2x) is measured")
    parser.add_argument("--shapiq-max-n", type=int, default=128,
                        help="largest n at which shapiq's ProxySPEX runs (its 5-fold grid takes hours beyond)")
    parser.add_argument("--spex-ns", type=int, nargs="*", default=[64, 128], help="n for SPEX vs shapiq SPEX")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "engine.json"))
    parser.add_argument("--scale", nargs="*", default=[], metavar="N:MASKS",
                        help="issue 14: only the scale section, at these (n, masks), e.g. 2048:30000 4096:50000")
    parser.add_argument("--before-tree", default=None,
                        help="scale: a checkout of the code to compare with (e.g. `git worktree add /tmp/before main`)")
    parser.add_argument("--before-cap", type=float, default=3600, help="scale: seconds a spex run may take")
    parser.add_argument("--shapiq-cap", type=float, default=600, help="scale: seconds shapiq's SPEX may take (0: skip)")
    parser.add_argument("--skip-before-variant", action="store_true",
                        help="variants: leave out the before run (the scale table has it)")
    parser.add_argument("--variants", action="store_true",
                        help="scale: instead, ProxySPEX variants (settings tried for issue 14) at the first --scale size")
    args = parser.parse_args()

    if args.scale and args.variants:
        rows = variant_rows(args)
        print("\n" + variants_markdown(rows))
        write(args, rows)
        return
    if args.scale:
        rows = scale_rows(args)
        print("\n" + scale_markdown(rows))
        write(args, rows)
        return
    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        ours, peer = row.get("ours", {}), row.get("shapiq", {})
        ratio = (ours["seconds"] / peer["seconds"]) if peer else float("nan")
        print(f"{row['section']:<10} {row['kind']:<12} n={row['n']:<5} noise={row['noise']:<4} budget={row['budget']:<6} "
              f"ours R²={ours.get('r2', float('nan')):.4f} ({ours.get('seconds', float('nan')):.2f}s)  "
              f"shapiq R²={peer.get('r2', float('nan')):.4f} ({peer.get('seconds', float('nan')):.2f}s)  "
              f"time ratio={ratio:.3f}" + (f"  {row['note']}" if row.get("note") else ""), flush=True)

    for n in args.ns:
        budget = int(args.alpha * n * math.log2(n))
        holdout = mask_sampling.holdout(n, 1000, seed=10_000 + n)
        for kind in args.kinds:
            for noise in args.noises:
                game = planted(n, kind, noise=noise, seed=args.seed + n)
                row: dict[str, Any] = {"section": "proxyspex", "kind": kind, "n": n, "noise": noise, "budget": budget,
                                       "ours": run_ours(game, n, budget, "proxyspex", args.seed, holdout)}
                if n <= args.shapiq_max_n:
                    row["shapiq"] = run_shapiq(game, n, budget, "proxyspex", args.seed, holdout)
                emit(row)
                floor: dict[str, Any] = {"section": "floor", "kind": kind, "n": n, "noise": noise, "budget": budget,
                                         "ours": run_ours(game, n, budget, "linear", args.seed, holdout), "note": "linear"}
                emit(floor)
                if n <= 64:
                    emit({**floor, "ours": run_ours(game, n, budget, "faith_banzhaf", args.seed, holdout),
                          "note": "faith_banzhaf"})

    for n in args.budget_curve_ns:
        holdout = mask_sampling.holdout(n, 1000, seed=10_000 + n)
        for kind in args.kinds:
            game = planted(n, kind, noise=0.0, seed=args.seed + n)
            for alpha in (2, 4, 8):
                budget = int(alpha * n * math.log2(n))
                emit({"section": "budget", "kind": kind, "n": n, "noise": 0.0, "budget": budget, "alpha": alpha,
                      "ours": run_ours(game, n, budget, "proxyspex", args.seed, holdout),
                      "shapiq": run_shapiq(game, n, 2 * budget, "proxyspex", args.seed, holdout),
                      "note": "shapiq at 2x budget"})

    if "spex" in spex.METHODS:
        for n in args.spex_ns:
            holdout = mask_sampling.holdout(n, 1000, seed=10_000 + n)
            for kind in args.kinds:
                game = planted(n, kind, noise=0.0, seed=args.seed + n)
                from spex.engine.methods.bch import parameter_search

                # the reference setting: b = 8, t = 5, C = 3 -> C·(p+1)·2^b masks (31,488 at n = 128)
                _, length, dim = parameter_search(n, 5)
                budget = 3 * (length - dim + 1) * 2**8
                try:
                    ours = run_ours(game, n, budget, "spex", args.seed, holdout)
                except Exception as exc:  # report, don't hide
                    emit({"section": "spex", "kind": kind, "n": n, "noise": 0.0, "budget": budget, "ours": {}, "note": f"error: {exc}"})
                    continue
                row = {"section": "spex", "kind": kind, "n": n, "noise": 0.0, "budget": budget, "ours": ours,
                       "shapiq": run_shapiq(game, n, budget, "spex", args.seed, holdout, decoder_type="soft",
                                            degree_parameter=ours["diagnostics"].get("t", 5)),
                       "note": f"b={ours['diagnostics'].get('b')} t={ours['diagnostics'].get('t')}"}
                emit(row)

    print("\n" + markdown(rows))
    write(args, rows)


def write(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"), "args": vars(args), "load_average_at_end": os.getloadavg()}
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=float))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
