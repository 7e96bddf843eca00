"""Coverage of the nominal 95 % intervals (issue 12; named ``intervals`` so as not to shadow the
``coverage`` package, which numba imports): how often does an interaction's interval contain
the truth, and how does the reported standard error compare with the estimate's real spread?

**(a) Planted noisy games** (:func:`spex.engine.synthetic.planted`, hashed per-mask noise of 0.1 × the
signal's sd): the truth is the planted function's exact index — Faith-Banzhaf of order 2 (order 1 for
``linear``, which estimates that) — from its exact spectrum. Per game, method and estimator (below), over ``--game-seeds`` seeds (the method's
seed: its masks; the game is fixed): the fraction of (seed, interaction) whose interval contains the truth,
over the 10 interactions largest in |truth|, split by order; and per interaction mean se / sd of the
estimates across seeds (1 = the se is right; < 1 too small), and the bias of the seeds' mean in units of
that sd. An interaction the method's support leaves out has estimate 0 with se 0 ("missed": it covers
only a truth of 0).

**(b) Real models** (MiniLM sentiment, ``builtin:minilm-sentiment``; the subjects and value functions of
``benchmarks/gates.py``: the heads lens on the demo's negation task, the features lens on a 23-word review,
the data lens on the demo's two data subjects). No exact answer exists, so the spread across seeds is
the truth: per subject and method, the mean of the ``--seeds`` seeds' estimates stands for the value,
and coverage is the fraction of (seed, interaction) whose interval contains that mean, over the 10
interactions of the mean largest in |value|; also sd across seeds vs mean se. What this cannot see: a
bias shared by every seed (a term no seed's support picks up).

**Estimators** (columns): ``bootstrap`` — spex's default for ProxySPEX at these sizes
(:mod:`spex.engine.bootstrap`: 20 cluster-bootstrap refits of the whole fit, support selection included),
``cluster`` — the fixed-support least-squares sandwich (the default for the other methods, and for
ProxySPEX above :data:`spex.engine.bootstrap.AUTO_MAX_CELLS`), ``ols``. A last table gives what each
estimator costs: its seconds against the rest of the fit's (outside value calls), median per explain.

Budgets: ProxySPEX and linear at the spec's α·n·log2 n (a's games: α = 4; b: the specs' α); faith_banzhaf
at max(that, 2 × its 1 + n + n(n−1)/2 columns) so that it solves least squares (below that it falls back
to a cross-validated Lasso, whose shrunk coefficients no least-squares interval describes); SPEX at 2,688
masks (b = 5, t = 5, C = 3; its minimum design). Real models: faith_banzhaf is not run on the heads lens
(n = 72: 2,629 columns, more than the 667-mask budget: its se is unknown), SPEX only on the data lens
(2,688 masks per seed are cheap there, 10+ minutes per lens elsewhere on 2 CPU cores).

Every model call goes through the persistent ablation store of ``benchmarks/gates.py`` (``--root``), so the
seeds ``gates.py`` ran are not computed again (and the reverse).

    python benchmarks/intervals.py                        # (a) + (b): ~25 min on 2 quiet cores the first time,
                                                          # a few minutes once gates.py filled the store
    python benchmarks/intervals.py --parts planted        # (a) only, ~5 min
    python benchmarks/intervals.py --parts real --lenses data --seeds 5 --out /tmp/c.json   # smoke run

Writes ``benchmarks/results/intervals.json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gates as gate_bench  # noqa: E402  (benchmarks/gates.py: the specs, the auditor, the store)
import torch  # noqa: E402

import spex  # noqa: E402
from spex import settings  # noqa: E402
from spex.engine import sets  # noqa: E402
from spex.engine.indices import compute  # noqa: E402
from spex.engine.synthetic import planted  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ESTIMATORS = ("bootstrap", "cluster", "ols")


def estimators_for(method: str) -> tuple[str, ...]:
    """The covariance estimators a method can use: the selection bootstrap only where the method chooses
    its support from the masks (ProxySPEX; spex.explain refuses it elsewhere)."""
    return ESTIMATORS if spex.get_method(method).resamplable else ("cluster", "ols")
TOP = 10
LEVEL = 0.95
GAMES = (  # (kind, n, k planted sets, their order, relative noise)
    ("hierarchical", 24, 4, 3, 0.1),
    ("peak", 24, 4, 3, 0.1),
)
PLANTED_METHODS = ("proxyspex", "spex", "linear", "faith_banzhaf")
REAL_METHODS = {"heads": ("proxyspex", "linear"), "features": ("proxyspex", "linear", "faith_banzhaf"),
                "data": ("proxyspex", "linear", "faith_banzhaf", "spex")}
SPEX_BUDGET = 2688

log = gate_bench.log


def index_order(method: str) -> int:
    """The Faith-Banzhaf order a method estimates: 1 for linear, 2 otherwise."""
    return 1 if method == "linear" else 2


def method_budget(method: str, n: int, alpha_budget: int) -> int:
    if method == "spex":
        return SPEX_BUDGET
    if method == "faith_banzhaf":
        return max(alpha_budget, 2 * (1 + n + n * (n - 1) // 2))
    return alpha_budget


COSTS: dict[str, list[tuple[float, float]]] = {}  # estimator -> (uncertainty s, rest of the fit s) per explain


def estimates(ex: Any, order: int) -> dict[tuple[int, ...], tuple[float, float, float, float]]:
    """members -> (value, se, ci_low, ci_high) of the Faith-Banzhaf index of ``order`` (and the explain's
    seconds for the uncertainty vs the rest of the fit, into COSTS)."""
    s = ex.seconds
    COSTS.setdefault(ex.diagnostics.get("uncertainty", "?"), []).append(
        (s.get("uncertainty", 0.0), s.get("outside_value_calls", 0.0) - s.get("uncertainty", 0.0)))
    table = ex.interactions(index="fbii", order=order, level=LEVEL)
    return {tuple(int(x) for x in m): (float(v), float(s), float(lo), float(hi))
            for m, v, s, lo, hi in zip(table["members"], table["value"], table["se"], table["ci_low"],
                                       table["ci_high"], strict=True)}


def summarise(per_seed: Sequence[Mapping[tuple[int, ...], tuple[float, float, float, float]]],
              truth: Mapping[tuple[int, ...], float]) -> dict[str, Any]:
    """Coverage and se-vs-spread of ``truth``'s interactions over the seeds' estimates (module docstring)."""
    rows = []
    for members, true_value in truth.items():
        got = [t.get(members, (0.0, 0.0, 0.0, 0.0)) for t in per_seed]
        values = np.array([g[0] for g in got])
        ses = np.array([g[1] for g in got])
        covered = np.array([g[2] <= true_value <= g[3] for g in got])
        missed = np.array([members not in t for t in per_seed])
        unknown = ~np.isfinite(ses)
        sd = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
        rows.append({"members": list(members), "order": len(members), "truth": float(true_value),
                     "mean_estimate": float(values.mean()), "sd_across_seeds": sd,
                     "mean_se": float(np.nanmean(ses)) if (~unknown).any() else None,
                     "se_over_sd": float(np.nanmean(ses) / sd) if sd > 0 and (~unknown).any() else None,
                     "bias_in_sd": float((values.mean() - true_value) / sd) if sd > 0 else None,
                     "coverage": float(covered.mean()), "missed": int(missed.sum()), "unknown_se": int(unknown.sum())})

    def part(keep: list[dict[str, Any]]) -> dict[str, Any]:
        if not keep:
            return {"interactions": 0}
        ratios = [r["se_over_sd"] for r in keep if r["se_over_sd"] is not None]
        return {"interactions": len(keep), "coverage": float(np.mean([r["coverage"] for r in keep])),
                "median_se_over_sd": float(np.median(ratios)) if ratios else None,
                "mean_se_over_sd": float(np.mean(ratios)) if ratios else None,
                "missed_fraction": float(np.sum([r["missed"] for r in keep]) / (len(keep) * len(per_seed))),
                "unknown_se_fraction": float(np.sum([r["unknown_se"] for r in keep]) / (len(keep) * len(per_seed)))}

    return {"all": part(rows), "order1": part([r for r in rows if r["order"] == 1]),
            "order2": part([r for r in rows if r["order"] == 2]), "rows": rows}


def top_truth(members: np.ndarray, values: np.ndarray, top: int = TOP) -> dict[tuple[int, ...], float]:
    keep = np.flatnonzero(sets.orders(members) > 0)
    order = keep[np.argsort(-np.abs(values[keep]), kind="stable")[:top]]
    return dict(zip(sets.to_tuples(members[order]), (float(v) for v in values[order]), strict=True))


# ================================================================================================ (a)
def part_planted(seeds: int, alpha: float, methods: Sequence[str] = PLANTED_METHODS,
                 proxyspex_options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """``proxyspex_options``: ProxySPEX options for this run (e.g. ``low_order="off"``, to measure the
    small-budget blend against the proxy alone at the same budgets)."""
    out = []
    for kind, n, k, order, noise in GAMES:
        game = planted(n, kind, k=k, order=order, noise=noise, seed=7)
        exact = game.spectrum()
        alpha_budget = int(alpha * n * math.log2(n))
        for method in methods:
            started = time.perf_counter()
            options = dict(proxyspex_options or {}) if method == "proxyspex" else {}
            o = index_order(method)
            truth = top_truth(*compute(exact, "fbii", o))
            budget = method_budget(method, n, alpha_budget)
            row: dict[str, Any] = {"options": options, "game": kind, "n": n, "planted_sets": k, "planted_order": order, "noise": noise,
                                   "method": method, "index": f"fbii order {o}", "budget": budget, "seeds": seeds}
            for estimator in estimators_for(method):
                per_seed = [estimates(spex.explain(game, n, budget=budget, method=method, seed=s,
                                                   uncertainty=estimator, **options), o) for s in range(seeds)]
                row[estimator] = summarise(per_seed, truth)
            row["seconds"] = time.perf_counter() - started
            out.append(row)
            print_row("planted", f"{kind} n={n}", method, row)
    return out


# ================================================================================================ (b)
def part_real(lenses: Sequence[str], seeds: int, root: Path) -> list[dict[str, Any]]:
    auditor = gate_bench.Auditor(str(root / "ablations"))
    out = []
    for lens in lenses:
        spec = gate_bench.lens_specs(lens, root)
        audit_spec = gate_bench.runtime.spec_from(spec)
        for method in REAL_METHODS[lens]:
            started, calls = time.perf_counter(), auditor.computed()
            o = index_order(method)
            by_estimator: dict[str, dict[str, list[Any]]] = {}
            budgets: dict[str, int] = {}
            for estimator in estimators_for(method):
                for seed in range(seeds):
                    runs = auditor.run(spec, seed, method=method, estimator=estimator) if method != "faith_banzhaf" \
                        else faith_banzhaf_run(auditor, spec, seed, estimator)
                    for sid, run in runs.items():
                        by_estimator.setdefault(estimator, {}).setdefault(sid, []).append(estimates(run.explanation, o))
                        budgets[sid] = run.budget
            for subject in audit_spec.subjects:
                sid = subject.id
                mean = mean_estimates(by_estimator["cluster"][sid])
                truth = dict(sorted(mean.items(), key=lambda kv: -abs(kv[1]))[:TOP])
                row: dict[str, Any] = {"lens": lens, "subject": sid, "method": method, "index": f"fbii order {o}",
                                       "budget": budgets[sid], "seeds": seeds,
                                       "n": auditor.bound(spec, sid).n_features}
                for estimator in estimators_for(method):
                    row[estimator] = summarise(by_estimator[estimator][sid], truth)
                row["seconds"] = time.perf_counter() - started
                row["model_calls"] = auditor.computed() - calls
                out.append(row)
                print_row("real", f"{lens}/{sid}", method, row)
    return out


def faith_banzhaf_run(auditor: Any, spec: Mapping[str, Any], seed: int, estimator: str) -> dict[str, Any]:
    """faith_banzhaf at its least-squares budget (module docstring), through the same store."""
    audit_spec = gate_bench.runtime.spec_from({**spec, "seed": seed})
    out = {}
    for subject in audit_spec.subjects:
        bound = auditor.bound(spec, subject.id)
        n = bound.n_features
        budget = method_budget("faith_banzhaf", n, audit_spec.check_budget(n, subject.id))
        ex = spex.explain(bound, n, budget=budget, method="faith_banzhaf", seed=seed, uncertainty=estimator)
        out[subject.id] = gate_bench.SubjectRun(subject.id, n, budget, [], ex, list(bound.feature_labels))
    return out


def mean_estimates(per_seed: Sequence[Mapping[tuple[int, ...], tuple[float, ...]]]) -> dict[tuple[int, ...], float]:
    keys = set().union(*per_seed)
    return {m: float(np.mean([t.get(m, (0.0,))[0] for t in per_seed])) for m in keys}


# ================================================================================================ tables
def fmt(x: Any, f: str = "%.2f") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f % x


def print_row(part: str, case: str, method: str, row: Mapping[str, Any]) -> None:
    shown = " | ".join(f"{e} cov {fmt(row[e]['all'].get('coverage'))} (1st {fmt(row[e]['order1'].get('coverage'))}, "
                       f"pairs {fmt(row[e]['order2'].get('coverage'))}) se/sd {fmt(row[e]['all'].get('median_se_over_sd'))}"
                       for e in estimators_for(method))
    log(f"  {part:<7} {case:<28} {method:<13} B={row['budget']:<5} {shown} ({row['seconds']:.0f} s)")


def markdown(rows: Sequence[Mapping[str, Any]], real: bool) -> str:
    head = "| lens / subject" if real else "| game"
    lines = [f"{head} | method | index | budget | estimator | coverage (top 10) | 1st order | pairs | "
             "median se / sd | 1st order: median se / sd | missed |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        case = f"{r['lens']} / {r['subject']} (n={r['n']})" if real else f"{r['game']} n={r['n']}"
        for estimator in estimators_for(r["method"]):
            s = r[estimator]
            flag = " **<90 %**" if s["all"].get("coverage") is not None and s["all"]["coverage"] < 0.9 else ""
            lines.append(f"| {case} | {r['method']} | {r['index']} | {r['budget']} | {estimator} | "
                         f"{pct(s['all'].get('coverage'))}{flag} | {pct(s['order1'].get('coverage'))} | "
                         f"{pct(s['order2'].get('coverage'))} | {fmt(s['all'].get('median_se_over_sd'))} | "
                         f"{fmt(s['order1'].get('median_se_over_sd'))} | {pct(s['all'].get('missed_fraction'))} |")
    return "\n".join(lines)


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["planted", "real"], choices=["planted", "real"])
    parser.add_argument("--lenses", nargs="+", default=["data", "features", "heads"])
    parser.add_argument("--seeds", type=int, default=21, help="seeds per real subject")
    parser.add_argument("--game-seeds", type=int, default=30, help="seeds per planted game")
    parser.add_argument("--alpha", type=float, default=4.0, help="planted games: budget alpha·n·log2 n")
    parser.add_argument("--methods", nargs="+", default=list(PLANTED_METHODS), help="planted games: the methods run")
    parser.add_argument("--low-order", choices=["auto", "off"], default=None,
                        help="ProxySPEX's small-budget Lasso blend (default: its default, auto)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--root", default=str(settings.data_dir() / "benchmarks"))
    parser.add_argument("--out", default=str(RESULTS / "intervals.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    meta = {"machine": platform.platform(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": args.threads, "load_at_start": gate_bench.load_avg(),
            "date": time.strftime("%Y-%m-%d"), "level": LEVEL, "top": TOP, "commit": gate_bench._commit()}
    result: dict[str, Any] = {"meta": meta}
    started = time.perf_counter()
    if "planted" in args.parts:
        log(f"(a) planted games, {args.game_seeds} seeds (load {gate_bench.load_avg()})")
        result["planted"] = part_planted(args.game_seeds, args.alpha, args.methods,
                                         {"low_order": args.low_order} if args.low_order else None)
    if "real" in args.parts:
        log(f"(b) real models, {args.seeds} seeds (load {gate_bench.load_avg()})")
        result["real"] = part_real(args.lenses, args.seeds, Path(args.root))
    meta["seconds"] = time.perf_counter() - started
    result["cost"] = {e: {"explains": len(v), "uncertainty_s_median": float(np.median([u for u, _ in v])),
                          "rest_of_fit_s_median": float(np.median([f for _, f in v])),
                          "ratio_median": float(np.median([u / f for u, f in v if f > 0]))}
                      for e, v in COSTS.items()}
    meta["load_at_end"] = gate_bench.load_avg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=gate_bench._json_default))
    if "planted" in result:
        log("\n" + markdown(result["planted"], real=False))
    if "real" in result:
        log("\n" + markdown(result["real"], real=True))
    log("\n| estimator | explains | uncertainty s (median) | rest of the fit s (median) | ratio (median) |\n"
        "|---|---|---|---|---|")
    for e, c in result["cost"].items():
        log(f"| {e} | {c['explains']} | {c['uncertainty_s_median']:.3f} | {c['rest_of_fit_s_median']:.3f} | "
            f"{c['ratio_median']:.1f} |")
    log(f"\nwrote {args.out} ({meta['seconds']:.0f} s, load {meta['load_at_end']})")


if __name__ == "__main__":
    main()
