"""spex's context lens against ContextCite (issue 15), on the bundled multi-passage questions.

Both sides attribute the same value: SmolLM2-135M-Instruct (``builtin:smollm2-135m-instruct``), the
same prompt (ContextCite's template and chat template, the same passages), the same answer (the
response ContextCite generates, greedy, scored teacher-forced token for token: the ids are checked equal).

* **ContextCite** (``context-cite`` 0.0.4, never imported by spex/): its own ablation masks
  (``context_cite.utils._create_mask``, keep probability 0.5, seeds 0..B-1) and its own surrogate
  (``ContextCiter.solver``: a LASSO on the logit-probability of the response), at its budgets 32, 64,
  128 and 256. The ablation values are computed once by the spex value function and fed to its solver
  (its ``_get_attributions_for_ids_range`` minus the aggregation, which is the same formula); one
  subject is also run end to end by ContextCite's own pipeline (its own Hugging Face calls) and its
  values and attributions are compared with the fed ones (``self_check``).
* **spex**: ``spex.explain`` (ProxySPEX, the audit default) at the same budgets, and at spex's own
  budget (the spec's ``auto``: α·n·log2 n masks, all 2^n when that is at most twice as many).

Measured per subject and budget: held-out R² of each surrogate on uniform masks (real model calls: all
2^n masks where n <= 12, else ``--holdout`` i.i.d. uniform masks), ContextCite's metric (the log-prob drop
of the answer when the top-k sources are removed, k = 1..3: ContextCite removes its k highest scores,
spex the k sources whose joint removal its surrogate predicts lowers the answer most), and seconds
(model calls x the subject's measured seconds per call, plus the surrogate's fit). For spex's strongest
pairs: the real second difference f(S) - f(S-a) - f(S-b) + f(S-a-b) at the full context against spex's
prediction (a linear surrogate predicts 0 for every pair).

Every value goes through the ablation store (``--store``), so a rerun makes no model call.

    python benchmarks/context.py                      # everything (long on 2 CPUs: see --subjects)
    python benchmarks/context.py --subjects bridge-architect,esk-long --alpha 2 --holdout 100
    python benchmarks/context.py --kv-reuse           # the shared-prefix KV cache on vs off (results/context_kv.json)
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

HERE = Path(__file__).resolve().parent
BUDGETS = (32, 64, 128, 256)
KS = (1, 2, 3)
EXACT_HELDOUT_MAX_N = 12
MODEL = "builtin:smollm2-135m-instruct"
CC_TEMPLATE = "Context: {context}\n\nQuery: {query}"  # ContextCite's default
MIN_TIMED_CALLS = 100  # fewer new calls of a subject than this: its seconds per call come from --seconds-from
CONFIRM_NATS = 0.5  # a pair counts as confirmed when the real second difference has spex's sign and |.| >= this


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def passages_partitioner(documents: list[str], separator: str) -> Any:
    """ContextCite's partitioner interface over the subject's passages (the same sources spex masks)."""
    from context_cite.context_partitioner import BaseContextPartitioner

    class Passages(BaseContextPartitioner):
        def __init__(self) -> None:
            super().__init__(separator.join(documents))

        @property
        def num_sources(self) -> int:
            return len(documents)

        def split_context(self) -> None:
            return None

        def get_source(self, index: int) -> str:
            return documents[index]

        def get_context(self, mask: Any = None) -> str:
            keep = np.ones(len(documents), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
            return separator.join(d for d, k in zip(documents, keep) if k)

    return Passages()


def logit_prob(log_p: np.ndarray) -> np.ndarray:
    """ContextCite's regression target (``aggregate_logit_probs``): log p - log(1 - p) of the response."""
    return log_p - np.log1p(-np.exp(np.minimum(log_p, -1e-12)))


def log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


class Timer:
    """Seconds per model call of one subject, from the engine's counters."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.start = (engine.total.computed, engine.total.compute_seconds)

    def computed(self) -> int:
        return int(self.engine.total.computed - self.start[0])

    def per_call(self) -> float:
        computed = self.engine.total.computed - self.start[0]
        seconds = self.engine.total.compute_seconds - self.start[1]
        return seconds / computed if computed else math.nan


def own_budget(row: dict[str, Any], alpha: float, seed: int) -> int:
    """spex's budget for the subject: what ``budget: auto`` gives in a context spec."""
    from spex.audit.spec import validate_spec

    spec = validate_spec({"model": MODEL, "lens": "context", "alpha": alpha, "seed": seed,
                          "subjects": [{k: row[k] for k in ("id", "question", "documents")}]})
    return spec.check_budget(len(row["documents"]), row["id"])


def run_subject(row: dict[str, Any], model: Any, engine: Any, args: argparse.Namespace, self_check: bool) -> dict[str, Any]:
    import spex
    from context_cite import ContextCiter
    from context_cite.utils import _create_mask
    from spex.engine.exact import all_masks
    from spex.engine.heldout import r2
    from spex.engine.sampling import holdout as holdout_masks
    from spex.lenses.context_passages import context

    docs, question, n = row["documents"], row["question"], len(row["documents"])
    timer = Timer(engine)
    started = time.perf_counter()
    partitioner = passages_partitioner(docs, "\n\n")
    generate = {"max_new_tokens": args.max_new_tokens, "do_sample": False}
    cc = ContextCiter(model.model, model.tokenizer, partitioner.context, question, partitioner=partitioner,
                      generate_kwargs=generate, num_ablations=max(BUDGETS), batch_size=1, prompt_template=CC_TEMPLATE)
    response = cc.response  # ContextCite's generate call (greedy)
    vf = context(model, question, docs, target=response, max_new_tokens=args.max_new_tokens)
    same_prompt = vf.model_input(np.ones(n, dtype=bool)) == cc._get_prompt_ids(return_prompt=True)[1]
    same_answer = list(vf.target_ids) == list(cc._response_ids)
    bound = engine.bind(vf)
    full = np.ones((1, n), dtype=bool)
    f_full = float(bound(full)[0])
    heldout = all_masks(n) if n <= EXACT_HELDOUT_MAX_N else holdout_masks(n, args.holdout, args.seed)
    log(f"{row['id']}: n={n}, answer {response!r}, {len(heldout)} held-out masks")
    y_held = bound(heldout)

    def removed(members: Any) -> np.ndarray:
        mask = np.ones(n, dtype=bool)
        mask[list(members)] = False
        return mask

    def drops(choices: list[tuple[int, ...]]) -> list[float]:
        values = bound(np.array([removed(c) for c in choices], dtype=bool))
        return [f_full - float(v) for v in values]

    rows = []
    long = n > EXACT_HELDOUT_MAX_N
    alpha = args.alpha_long if long and args.alpha_long is not None else args.alpha
    own = own_budget(row, alpha, args.seed) if alpha > 0 else None  # --alpha-long 0: not run (too long here)
    ours = [b for b in (args.budgets_long if long and args.budgets_long else BUDGETS)]
    budgets = sorted(set(ours) | ({own} if own else set()))
    pairs_at = own if own else max(ours)  # the pairs of the fit an audit would report (else the largest budget)
    # and, where every value is in the store anyway (n <= 12), the pairs of the smallest budget at which spex
    # samples: there the fit has not seen most masks, so real removal tests it
    sampled_at = min((b for b in ours if b < 2**n), default=None) if not n > EXACT_HELDOUT_MAX_N else None
    cc_masks = np.array([_create_mask(n, 0.5, s) for s in range(max(ours))], dtype=bool)  # seeds 0..B-1, as ContextCite
    y_cc = bound(cc_masks)
    n_tokens = len(cc._response_ids)
    for budget in budgets:
        entry: dict[str, Any] = {"budget": budget, "own_budget": budget == own}
        if budget in ours:
            t0 = time.perf_counter()
            weight, bias = cc.solver.fit(cc_masks[:budget], logit_prob(y_cc[:budget]), n_tokens)
            fit_cc = time.perf_counter() - t0
            predicted = heldout.astype(float) @ weight + bias
            top = np.argsort(-weight, kind="stable")
            entry["contextcite"] = {
                "r2": r2(y_held, log_sigmoid(predicted)), "r2_logit_prob": r2(logit_prob(y_held), predicted),
                "topk_drop": drops([tuple(top[:k]) for k in KS]), "calls": budget, "fit_seconds": fit_cc,
                "top_sources": [int(i) for i in top[:3]], "weights": [float(w) for w in weight],
            }
        ex = spex.explain(bound, n, budget=budget, method="proxyspex", seed=args.seed,
                         uncertainty="cluster")  # R² and seconds as recorded; se not compared here
        choices = [spex.removal(ex.spectrum, k, "down").features for k in KS]
        entry["spex"] = {
            "r2": r2(y_held, ex.spectrum.predict(heldout)), "topk_drop": drops(choices), "calls": int(ex.n_calls),
            "fit_seconds": float(ex.seconds.get("outside_value_calls", 0.0)), "exact": bool(ex.diagnostics.get("exact")),
            "removed": [list(map(int, c)) for c in choices],
        }
        if budget in (pairs_at, sampled_at):
            entry["pairs"] = pairs(ex, bound, f_full, n, row, args.pair_contexts, args.seed)
        rows.append(entry)
    per_call = timer.per_call()
    for entry in rows:
        for side in ("spex", "contextcite"):
            if side in entry:
                entry[side]["seconds"] = entry[side]["calls"] * per_call + entry[side]["fit_seconds"]
    out = {"id": row["id"], "n": n, "alpha": alpha, "own_budget": own, "pairs_budget": pairs_at,
           "pairs_sampled_budget": sampled_at, "kind": (row.get("expect") or {}).get("kind"),
           "needs": (row.get("expect") or {}).get("needs"), "question": question, "answer": response,
           "answer_tokens": n_tokens, "same_prompt": bool(same_prompt), "same_answer_tokens": bool(same_answer),
           "full_value": f_full, "heldout_masks": int(len(heldout)), "heldout_exact": n <= EXACT_HELDOUT_MAX_N,
           "seconds_per_call": per_call, "calls_computed": timer.computed(),
           "prefix_cache_tokens": vf.describe()["prefix_cache_tokens"],
           "mean_tokens_per_row": float(np.mean(vf.cost(cc_masks))), "budgets": rows,
           "seconds": time.perf_counter() - started}
    if self_check:
        out["self_check"] = contextcite_self_check(model, docs, question, generate, bound, n_tokens)
    return out


def banzhaf_by_removal(bound: Any, n: int, a: int, b: int, contexts: int, seed: int) -> dict[str, float]:
    """The pair's Banzhaf interaction measured by real removals: the mean over contexts S of the other
    passages of f(S+a+b) - f(S+a) - f(S+b) + f(S). Every context (2^(n-2)) where n <= EXACT_HELDOUT_MAX_N,
    else ``contexts`` uniform ones (4 model calls each), with the mean's standard error. Faith-Banzhaf's
    order-2 terms are this index (Tsai et al. 2023), so it is what spex's FBII estimates."""
    from spex.engine.exact import all_masks
    from spex.engine.sampling import rng

    others = [i for i in range(n) if i not in (a, b)]
    exhaustive = n <= EXACT_HELDOUT_MAX_N
    drawn = all_masks(n - 2) if exhaustive else rng(seed, f"banzhaf-{a}-{b}").random((contexts, n - 2)) < 0.5
    base = np.zeros((len(drawn), n), dtype=bool)
    base[:, others] = drawn
    quads = np.repeat(base[:, None, :], 4, axis=1)
    quads[:, 0, [a, b]] = True
    quads[:, 1, a] = True
    quads[:, 2, b] = True
    v = bound(quads.reshape(-1, n)).reshape(-1, 4)
    second = v[:, 0] - v[:, 1] - v[:, 2] + v[:, 3]
    se = 0.0 if exhaustive else float(np.std(second, ddof=1) / math.sqrt(len(second)))
    return {"mean": float(np.mean(second)), "se": se, "contexts": int(len(second)), "exhaustive": exhaustive}


def pairs(ex: Any, bound: Any, f_full: float, n: int, row: dict[str, Any], contexts: int, seed: int) -> list[dict[str, Any]]:
    """spex's three strongest pairs (Faith-Banzhaf, order 2), its strongest pair with FBII >= CONFIRM_NATS
    (needed together), and the pair the subject's author expects,
    checked by real removal two ways: their Banzhaf interaction over contexts (what FBII estimates:
    :func:`banzhaf_by_removal`) and the second difference at the full context (remove a, b, both), each
    against spex's estimate of it. A linear surrogate says 0 for both."""
    table = ex.interactions(index="fbii", order=2)
    table = table[table["order"] == 2]
    value_of = {tuple(int(m) for m in t): float(v) for t, v in zip(table["members"], table["value"])}
    chosen = [tuple(int(m) for m in t) for t in table.head(3)["members"]]
    positive = table[table["value"] >= CONFIRM_NATS].sort_values("value", ascending=False)
    together = tuple(int(m) for m in positive["members"].iloc[0]) if len(positive) else None
    needs = tuple((row.get("expect") or {}).get("needs") or ())
    for extra in (together, needs):  # the strongest pair spex says is needed together; the planted one
        if extra and len(extra) == 2 and extra not in chosen:
            chosen.append(extra)
    out = []
    for a, b in chosen:
        masks = np.ones((4, n), dtype=bool)
        masks[1, a] = masks[2, b] = False
        masks[3, [a, b]] = False
        real = bound(masks)
        predicted = ex.spectrum.predict(masks)
        second = lambda v: float(v[0] - v[1] - v[2] + v[3])  # noqa: E731
        delta_real, delta_spex = second(real), second(predicted)
        fbii = value_of.get((a, b), 0.0)
        banzhaf = banzhaf_by_removal(bound, n, a, b, contexts, seed)
        distinct = abs(banzhaf["mean"]) >= CONFIRM_NATS and abs(banzhaf["mean"]) >= 2 * banzhaf["se"]
        out.append({"pair": [a, b], "expected": (a, b) == needs, "fbii": fbii, "reported": (a, b) in chosen[:3],
                    "strongest_together": (a, b) == together,
                    "banzhaf_real": banzhaf["mean"], "banzhaf_se": banzhaf["se"], "banzhaf_contexts": banzhaf["contexts"],
                    "delta_real": delta_real, "delta_spex": delta_spex, "delta_linear": 0.0,
                    "drop_a": float(f_full - real[1]), "drop_b": float(f_full - real[2]), "drop_both": float(f_full - real[3]),
                    "kind": "together" if banzhaf["mean"] > 0 else "either",
                    "confirmed": bool(distinct and np.sign(banzhaf["mean"]) == np.sign(fbii)),
                    "confirmed_full_context": bool(np.sign(delta_real) == np.sign(delta_spex) and abs(delta_real) >= CONFIRM_NATS)})
    return out


def contextcite_self_check(model: Any, docs: list[str], question: str, generate: dict[str, Any], bound: Any,
                           n_tokens: int, ablations: int = 32) -> dict[str, Any]:
    """ContextCite end to end on its own (its own model calls, batch size 1) against the values fed to it."""
    from context_cite import ContextCiter
    from context_cite.utils import aggregate_logit_probs

    partitioner = passages_partitioner(docs, "\n\n")
    cc = ContextCiter(model.model, model.tokenizer, partitioner.context, question, partitioner=partitioner,
                      generate_kwargs=generate, num_ablations=ablations, batch_size=1, prompt_template=CC_TEMPLATE)
    t0 = time.perf_counter()
    own = np.asarray(cc.get_attributions(verbose=False), dtype=float)
    seconds = time.perf_counter() - t0
    theirs = aggregate_logit_probs(cc._logit_probs, output_type="log_prob")
    ours = bound(cc._masks)
    fed, _ = cc.solver.fit(cc._masks, logit_prob(ours), n_tokens)
    return {"ablations": ablations, "model_calls": ablations + 1, "seconds": seconds,
            "max_abs_log_prob_diff": float(np.max(np.abs(theirs - ours))),
            "max_abs_attribution_diff": float(np.max(np.abs(own - fed))), "attributions": own.tolist()}


QUESTION_FIRST = "Question: {question}\n\nContext: {context}"


def kv_reuse(model: Any, rows: list[dict[str, Any]], args: argparse.Namespace, repeats: int = 3) -> list[dict[str, Any]]:
    """Does the shared-prefix KV cache pay? The same masks, cache on and off, interleaved (so load on the
    machine hits both alike), for ContextCite's template (question after the context: the cache holds
    the system prompt and ``Context:``) and a question-first one (the cache holds the question too)."""
    from spex.lenses.context_passages import context

    out = []
    for row in rows:
        n = len(row["documents"])
        masks = np.random.default_rng(args.seed).random((args.kv_batch, n)) < 0.5
        for name, template in (("contextcite (question after)", None), ("question first", QUESTION_FIRST)):
            kwargs = {"template": template} if template else {}
            on = context(model, row["question"], row["documents"], target=" " + row["expect"]["answer"], prefix_cache=True,
                         **kwargs)
            off = context(model, row["question"], row["documents"], target=" " + row["expect"]["answer"],
                          prefix_cache=False, **kwargs)
            on(masks[:2]), off(masks[:2])  # warm-up
            times: dict[str, list[float]] = {"on": [], "off": []}
            for _ in range(repeats):
                for key, vf in (("off", off), ("on", on)):
                    t0 = time.perf_counter()
                    values = vf(masks)
                    times[key].append(time.perf_counter() - t0)
                    if key == "off":
                        reference = values
            diff = float(np.max(np.abs(on(masks) - reference)))
            t_on, t_off = float(np.median(times["on"])), float(np.median(times["off"]))
            out.append({"subject": row["id"], "n": n, "template": name, "prefix_tokens": on._prefix.length,
                        "mean_row_tokens": float(np.mean(off.cost(masks))), "batch": int(len(masks)),
                        "seconds_on": t_on, "seconds_off": t_off, "ratio": t_on / t_off, "max_abs_diff": diff})
            log(f"kv {row['id']} {name}: prefix {on._prefix.length} of ~{out[-1]['mean_row_tokens']:.0f} tokens, "
                f"{t_off:.2f}s -> {t_on:.2f}s ({t_on / t_off:.2f}x)")
    return out


def table(results: list[dict[str, Any]]) -> str:
    head = ("| subject | n | budget | spex R² | ContextCite R² | spex top-1/2/3 drop | ContextCite top-1/2/3 drop "
            "| spex s | ContextCite s |")
    lines = [head, "|" + "---|" * 9]
    for s in results:
        for e in s["budgets"]:
            sp, cc = e["spex"], e.get("contextcite")
            budget = f"{e['budget']}" + (" (own" + (", exact" if sp["exact"] else "") + ")" if e["own_budget"] else "")
            drop = lambda d: "/".join(f"{x:.2f}" for x in d)  # noqa: E731
            lines.append(f"| {s['id']} | {s['n']} | {budget} | {sp['r2']:.3f} | {cc['r2']:.3f} | {drop(sp['topk_drop'])} | "
                         f"{drop(cc['topk_drop'])} | {sp['seconds']:.1f} | {cc['seconds']:.1f} |" if cc else
                         f"| {s['id']} | {s['n']} | {budget} | {sp['r2']:.3f} | – | {drop(sp['topk_drop'])} | – | "
                         f"{sp['seconds']:.1f} | – |")
    return "\n".join(lines)


def pair_table(results: list[dict[str, Any]]) -> str:
    """Every checked pair: spex's FBII against the pair's Banzhaf interaction by real removal (± its se where
    the contexts were sampled), and the second difference at the full context, real against spex's."""
    lines = ["| subject | masks | pair | checked as | spex FBII | real Banzhaf (contexts) | kind | Δ² full context: real / spex "
             "| drop a / b / both | confirmed |", "|" + "---|" * 10]
    for s in results:
        for e in s["budgets"]:
            for p in e.get("pairs", []):
                real = f"{p['banzhaf_real']:+.3f}" + (f" ± {p['banzhaf_se']:.3f}" if p["banzhaf_se"] else "")
                masks = f"{e['budget']}" + (" (own)" if e["own_budget"] else "")
                why = ", ".join(w for w, on in (("top 3", p["reported"]), ("strongest together", p["strongest_together"]),
                                                 ("planted", p["expected"])) if on)
                lines.append(f"| {s['id']} | {masks} | {p['pair'][0]}×{p['pair'][1]} | {why} | "
                             f"{p['fbii']:+.3f} | {real} ({p['banzhaf_contexts']}) | {p['kind']} | "
                             f"{p['delta_real']:+.2f} / {p['delta_spex']:+.2f} | "
                             f"{p['drop_a']:.2f} / {p['drop_b']:.2f} / {p['drop_both']:.2f} | {'yes' if p['confirmed'] else 'no'} |")
    return "\n".join(lines)


def print_report(results: list[dict[str, Any]], summary_: dict[str, Any]) -> None:
    """The per-budget, per-subject and pair tables, then the summary, as the README shows them."""
    print(by_budget(results))
    print()
    print(table(results))
    print()
    print(pair_table(results))
    print()
    print(json.dumps(summary_, indent=1, default=float))

def by_budget(results: list[dict[str, Any]]) -> str:
    """Per ContextCite budget: mean R² of both, and on how many subjects spex is at least as good."""
    lines = ["| budget | subjects | mean R² spex | mean R² ContextCite | spex R² >= | top-1 drop >= | top-2 drop >= "
             "| top-3 drop >= | model calls spex / ContextCite |", "|" + "---|" * 9]
    for budget in BUDGETS:
        pairs = [(e["spex"], e["contextcite"]) for s in results for e in s["budgets"]
                 if e["budget"] == budget and "contextcite" in e]
        if not pairs:
            continue
        count = len(pairs)
        wins = [sum(a["topk_drop"][k] >= b["topk_drop"][k] - 1e-9 for a, b in pairs) for k in range(len(KS))]
        lines.append(f"| {budget} | {count} | {np.mean([a['r2'] for a, _ in pairs]):.3f} | "
                     f"{np.mean([b['r2'] for _, b in pairs]):.3f} | {sum(a['r2'] >= b['r2'] for a, b in pairs)}/{count} | "
                     + " | ".join(f"{w}/{count}" for w in wins)
                     + f" | {sum(a['calls'] for a, _ in pairs)} / {sum(b['calls'] for _, b in pairs)} |")
    return "\n".join(lines)


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The targets: at equal ablations spex's R² and top-k drops >= ContextCite's, per subject."""
    misses = []
    for s in results:
        for e in s["budgets"]:
            if "contextcite" not in e:
                continue
            sp, cc = e["spex"], e["contextcite"]
            if sp["r2"] < cc["r2"]:
                misses.append({"subject": s["id"], "budget": e["budget"], "metric": "r2", "spex": sp["r2"], "contextcite": cc["r2"]})
            for k, a, b in zip(KS, sp["topk_drop"], cc["topk_drop"]):
                if a < b - 1e-9:
                    misses.append({"subject": s["id"], "budget": e["budget"], "metric": f"top{k}_drop", "spex": a, "contextcite": b})
    def tally(own: bool) -> dict[str, int]:
        checked = [p for s in results for e in s["budgets"] if e["own_budget"] == own for p in e.get("pairs", [])]
        reported = [p for p in checked if p["reported"]]
        planted = [p for p in checked if p["expected"]]
        together = [p for p in checked if p["strongest_together"]]
        return {"together": len(together), "together_confirmed": sum(p["confirmed"] for p in together),
                "reported": len(reported), "reported_confirmed": sum(p["confirmed"] for p in reported),
                "reported_confirmed_together": sum(p["confirmed"] and p["kind"] == "together" for p in reported),
                "reported_confirmed_full_context": sum(p["confirmed_full_context"] for p in reported),
                "planted": len(planted), "planted_confirmed": sum(p["confirmed"] for p in planted),
                "planted_together": sum(p["confirmed"] and p["kind"] == "together" for p in planted)}

    return {"comparisons": sum(1 + len(KS) for s in results for e in s["budgets"] if "contextcite" in e),
            "misses": misses, "pairs_own_budget": tally(True), "pairs_sampled_budget": tally(False)}


def seconds_from(results: list[dict[str, Any]], paths: list[str]) -> None:
    """Seconds of subjects whose values came from the store, from the earlier run that computed them (its
    measured seconds per model call, the same model and rows), so a rerun of the fits keeps honest model
    times: used unless this run itself timed at least MIN_TIMED_CALLS calls of the subject (a handful of
    new calls on a busy machine is no measurement)."""
    measured = {}
    for path in paths:
        for s in json.loads(Path(path).read_text())["results"]:
            if math.isfinite(s.get("seconds_per_call", math.nan)) and "seconds_per_call_from" not in s:
                measured[s["id"]] = (s["seconds_per_call"], path)
    for s in results:
        timed_here = s.get("calls_computed", 0) >= MIN_TIMED_CALLS and math.isfinite(s["seconds_per_call"])
        if timed_here or s["id"] not in measured:
            continue
        s["seconds_per_call"], source = measured[s["id"]]
        s["seconds_per_call_from"] = f"measured by {Path(source).name} (values from the store)"
        for entry in s["budgets"]:
            for side in ("spex", "contextcite"):
                if side in entry:
                    entry[side]["seconds"] = entry[side]["calls"] * s["seconds_per_call"] + entry[side]["fit_seconds"]


def fill_seconds(results: list[dict[str, Any]], tokens_per_s: float) -> None:
    """Seconds of a subject whose values all came from the store (an earlier run): its rows' tokens at
    the run's measured tokens per second, so every subject has a model-time estimate."""
    for s in results:
        if math.isfinite(s["seconds_per_call"]) or not tokens_per_s > 0:
            continue
        s["seconds_per_call"] = s["mean_tokens_per_row"] / tokens_per_s
        s["seconds_per_call_from"] = "run tokens/s (values from the store)"
        for entry in s["budgets"]:
            for side in ("spex", "contextcite"):
                if side in entry:
                    entry[side]["seconds"] = entry[side]["calls"] * s["seconds_per_call"] + entry[side]["fit_seconds"]


def merge(paths: list[str], out: Path) -> None:
    """One results file from several runs (each run's settings kept under ``runs``)."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    for run in runs:
        fill_seconds(run["results"], run["engine"]["tokens_per_s"])
    results = [r for run in runs for r in run["results"]]
    merged = {"merged_from": [{k: v for k, v in run.items() if k not in ("results", "summary")} for run in runs],
              "model": MODEL, "budgets": list(BUDGETS), "summary": summary(results), "results": results,
              "full_run": all(run.get("full_run") for run in runs)}
    out.write_text(json.dumps(merged, indent=1, default=float) + "\n")
    print_report(results, merged["summary"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", default="", help="comma-separated subject ids (default: all 15)")
    parser.add_argument("--alpha", type=float, default=4.0, help="spex's own budget: alpha * n * log2 n (the spec default 4)")
    parser.add_argument("--alpha-long", type=float, default=None,
                        help="alpha for subjects with n > 12 (default: --alpha); 1 keeps spex's own budget inside the 256 masks")
    parser.add_argument("--budgets-long", default="", help="ContextCite budgets for subjects with n > 12 (default: "
                        "32,64,128,256); with --alpha-long 0, spex's own budget is not run for them")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; 1 on a busy machine)")
    parser.add_argument("--holdout", type=int, default=200, help="held-out uniform masks where n > 12")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="the answer's length limit (both sides)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pair-contexts", type=int, default=16,
                        help="contexts per pair for its Banzhaf interaction by real removal where n > 12 (4 calls each)")
    parser.add_argument("--seconds-from", nargs="*", default=[], metavar="JSON",
                        help="earlier runs that measured the seconds per model call of subjects whose values this run "
                             "reads from the store")
    parser.add_argument("--store", default=None, help="ablation store (default: the spex data dir's)")
    parser.add_argument("--self-check", default="flag-colour", help="subject ContextCite also runs end to end ('' for none)")
    parser.add_argument("--out", default=None, help="results JSON (default: results/context.json, or context_kv.json)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="combine the results of earlier runs (e.g. the short subjects and the long one) into --out")
    parser.add_argument("--kv-reuse", action="store_true", help="measure only the shared-prefix KV cache, on and off")
    parser.add_argument("--kv-batch", type=int, default=16, help="masks per timed batch of --kv-reuse")
    args = parser.parse_args()
    args.budgets_long = [int(b) for b in args.budgets_long.split(",") if b] or None

    if args.merge:
        merge(args.merge, Path(args.out or HERE / "results" / "context.json"))
        return
    os.environ.setdefault("TQDM_DISABLE", "1")
    from spex import settings

    settings.apply_offline_defaults()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from spex.ablation import AblationEngine, AblationStore
    from spex.data.context import load_context_questions
    from spex.models import load

    rows = load_context_questions()
    wanted = [s for s in args.subjects.split(",") if s]
    if wanted:
        unknown = set(wanted) - {r["id"] for r in rows}
        if unknown:
            raise SystemExit(f"unknown subjects {sorted(unknown)}; the subjects are {[r['id'] for r in rows]}")
        rows = [r for r in rows if r["id"] in wanted]
    if args.kv_reuse:
        model = load(MODEL)
        kv_rows = rows if wanted else [r for r in rows if r["id"] in ("bridge-architect", "esk-long")]
        result = {"uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
                  "torch_threads": torch.get_num_threads(), "kv_reuse": kv_reuse(model, kv_rows, args)}
        result["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        path = Path(args.out or HERE / "results" / "context_kv.json")
        path.write_text(json.dumps(result, indent=1) + "\n")
        for r in result["kv_reuse"]:
            print(f"| {r['subject']} | {r['n']} | {r['template']} | {r['prefix_tokens']} | {r['mean_row_tokens']:.0f} | "
                  f"{r['seconds_off']:.2f} | {r['seconds_on']:.2f} | {r['ratio']:.2f} | {r['max_abs_diff']:.1e} |")
        return
    store = AblationStore(Path(args.store) if args.store else settings.data_dir() / "ablations")
    engine = AblationEngine(store, progress=False)
    model = load(MODEL)
    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    log(f"{len(rows)} subjects; torch threads {torch.get_num_threads()}; {uptime()}")
    results, started = [], time.perf_counter()
    for i, row in enumerate(rows):
        t0 = time.perf_counter()
        results.append(run_subject(row, model, engine, args, self_check=row["id"] == args.self_check))
        elapsed = time.perf_counter() - started
        log(f"subject {i + 1}/{len(rows)} {row['id']} done in {time.perf_counter() - t0:.0f}s; elapsed {elapsed:.0f}s; "
            f"{uptime()}")
    seconds_from(results, args.seconds_from)
    fill_seconds(results, engine.total.tokens_per_s)
    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                       "python": platform.python_version(), "uptime_at_end": uptime()},
           "model": MODEL, "budgets": list(BUDGETS), "alpha": args.alpha, "alpha_long": args.alpha_long, "budgets_long": args.budgets_long, "holdout": args.holdout,
           "max_new_tokens": args.max_new_tokens, "seed": args.seed, "subjects_run": [r["id"] for r in rows],
           "full_run": not wanted and args.alpha == 4.0 and args.alpha_long in (None, 4.0) and args.holdout >= 200
           and not args.budgets_long,
           "engine": engine.total.as_dict(), "summary": summary(results), "results": results,
           "seconds": time.perf_counter() - started}
    path = Path(args.out or HERE / "results" / "context.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print_report(results, out["summary"])


if __name__ == "__main__":
    main()
