"""The planted-change gate benchmark (issue 12): do the release gates stay quiet when nothing changed,
and fire — naming the right thing — when something did?

Three lenses on the built-in MiniLM sentiment classifier (``builtin:minilm-sentiment``), each audited the
way ``spex.audit`` does it, at engine level (no Prefect, no MLflow, for speed): the spec is validated
(:func:`spex.audit.runtime.spec_from`), each subject's value function is the lens's own
(:func:`spex.audit.runtime.value_function`, the path the audit's ablate stage uses), the budget is the
spec's (``spec.check_budget``), the method runs through ``spex.explain`` with its default covariance (the selection bootstrap), the
tables come from :func:`spex.audit.search.interaction_tables`, the diff from
:func:`spex.engine.ranking_diff.diff_rankings` and the verdict from :func:`spex.audit.gates.evaluate_gates`.
Every model call goes through one :class:`spex.ablation.AblationEngine` and a persistent store, so no mask
is ever computed twice — across seeds, across runs of this script and ``benchmarks/intervals.py``.

* **heads** — the demo's negation task (``spex/data/demo/sentiment-heads.yaml``: 6 sentences, 72 heads,
  α = 1.5). Planted: the attention output projection's input columns of one head (the head the baseline's
  seed-0 audit ranks highest among single heads) zeroed in the weights, saved with ``save_pretrained``.
* **features** — a 23-word, two-sentence review (2^23 masks: the budget never covers them all, so every
  standard error is a sampling error), α = 4, the baseline's predicted class as the target. Planted: the
  token-embedding row of one word (the highest-ranked single word of seed 0 that is one word piece and
  occurs once) set to zeros, saved with ``save_pretrained``.
* **data** — the demo's data subjects (``sentiment-data.yaml``: 24 training sentences, 2 targets, α = 4),
  the training set written to a JSONL file. Planted: the labels of the 4 training sentences with the
  largest first-order effect at seed 0 (summed over both targets) flipped, in a second JSONL file.

Per lens, seeds 0..S-1 (default 21) of the baseline and of the planted version. Each plant is checked
against its definition first (the planted model's values equal the baseline's where the planted
feature is removed).

* **False alarms**: baseline seed i vs baseline seed j (the same model re-audited with another seed):
  consecutive pairs (i, i+1) and all S(S-1)/2 pairs.
* **Detection**: planted seed i vs baseline seed i (what ``spex release`` does: one spec, one seed, both
  versions) and planted seed i vs baseline seed i+1 (another seed: harder).

Gates: the new default ``max_significant_changes: 0`` (``drift_fdr: 0.05``) at several ``min_effect``
(0 and multiples of the lens's median se(Δ) on the consecutive null pairs), the same with 1, 2 or 4
changes allowed, and the old rank gates side by side (``top_k_jaccard_min: 0.3``, ``max_rank_shift: 15``
from the heads demo; for the data lens also its own demo values 0.2 / 100). A verdict is ``failed``,
``undecided`` (a change could still exceed min_effect: ``max_budget`` would add masks; without it the
audit exits 3) or ``passed``. The significant changes of each detection run are sorted into: *involving*
a planted feature; *via a term* — the changed set lies inside a Fourier term of either version that
contains a planted feature and is distinguishable from 0 (Faith-Banzhaf of order 2 reads F(V) for
|V| <= 2 only, and the plant moves F(V) of a V without it only through such terms: for the heads plant
exactly F'(V) = F(V) + F(V ∪ {h})); and *unrelated*.

``--end-to-end-min-effect X`` also runs seed 0 of the features lens through the real release path
without Prefect: both folders registered as versions of an MLflow registered model, ``spex.audit.run``
on the baseline, then the release audit of the planted version with ``max_significant_changes: 0`` and
``min_effect: X`` (fresh SQLite DB and MLflow store in a temp data dir; its ablation store is this one).

    python benchmarks/gates.py --end-to-end-min-effect 0   # ~20 min on 2 quiet cores the first time (heads: 12);
                                                           # reruns reuse the store: ~5 min
    python benchmarks/gates.py --lenses data --seeds 5 --out /tmp/g.json   # smoke run

Writes ``benchmarks/results/gates.json`` and prints one table per lens.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import os
import platform
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spex import settings  # noqa: E402

settings.apply_offline_defaults()

import spex.models  # noqa: E402,F401  (spex.models.load)

import torch  # noqa: E402
import yaml  # noqa: E402
from scipy.stats import norm  # noqa: E402

import spex  # noqa: E402
from spex.ablation import AblationEngine, AblationStore  # noqa: E402
from spex.audit import runtime  # noqa: E402
from spex.audit.gates import evaluate_gates  # noqa: E402
from spex.audit.search import interaction_tables  # noqa: E402
from spex.audit.spec import Gates  # noqa: E402
from spex.engine import sets  # noqa: E402
from spex.engine.ranking_diff import SubjectDiff, diff_rankings  # noqa: E402
from spex.records.gate import verdict  # noqa: E402
from spex.engine.uncertainty import DEFAULT_ESTIMATOR, coefficient_standard_errors  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEMO = Path(__file__).resolve().parents[1] / "spex" / "data" / "demo"
MODEL = "builtin:minilm-sentiment"
FEATURES_PROMPT = ("It is not terrible, but I would never buy it again. "
                   "The fries were cold, but the rest of the meal was excellent.")
FLIPPED_EXAMPLES = 4
OLD_GATES = {"rank gates 0.3/15": {"top_k_jaccard_min": 0.3, "max_rank_shift": 15}}
DATA_OLD_GATES = {"rank gates 0.2/100 (data demo)": {"top_k_jaccard_min": 0.2, "max_rank_shift": 100}}
SE_MULTIPLES = (2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0)  # min_effect grid, in units of the lens's median se(delta)
# min_effect values in the lens's units (its value: heads and data a margin, features a logit), near where
# the se-multiple grid crosses from false alarms to undecided: the candidates for the demo specs
CANDIDATE_EFFECTS = {"heads": (0.06, 0.08, 0.1), "features": (0.2, 0.25, 0.3), "data": (0.75, 1.0)}
ALLOWANCES = (1, 2, 4)  # max_significant_changes > 0, side by side with 0
FDR = 0.05
LEVEL = 0.95

Rows = list[dict[str, Any]]


def log(*parts: Any) -> None:
    print(*parts, flush=True)


def load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "-"


# ================================================================================================ specs
def _demo(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEMO / name).read_text())


def heads_spec(model: str) -> dict[str, Any]:
    """The demo's heads release spec, on ``model`` (no registry: the folder or builtin itself)."""
    spec = _demo("sentiment-heads.yaml")
    spec.pop("baseline", None)
    return {**spec, "name": "bench-gates-heads", "model": model, "gates": {}}


def features_spec(model: str, target: str | None) -> dict[str, Any]:
    """A 23-word review on the features lens (α = 4, like the demo's features spec)."""
    subject: dict[str, Any] = {"id": "two-sentences", "prompt": FEATURES_PROMPT}
    if target is not None:
        subject["target"] = target
    return {"name": "bench-gates-features", "model": model, "lens": "features",
            "lens_options": {"unit": "word", "mask": "remove"}, "subjects": [subject], "method": "proxyspex",
            "budget": "auto", "alpha": 4, "seed": 0, "holdout": 64,
            "ranking": {"index": "fbii", "order": 2, "top_k": 10}, "gates": {},
            "batch": {"max_batch": 64, "chunk_size": 512}}


def data_spec(model: str, train: str) -> dict[str, Any]:
    """The demo's data release spec, with its training set read from ``train`` (a JSONL file)."""
    spec = _demo("sentiment-data.yaml")
    spec.pop("baseline", None)
    options = {k: v for k, v in spec["lens_options"].items() if k not in ("train", "limit", "sample_seed")}
    return {**spec, "name": "bench-gates-data", "model": model, "lens_options": {**options, "train": train},
            "gates": {}}


def demo_training_rows() -> list[dict[str, Any]]:
    """The demo data spec's 24 training sentences (builtin:sentiment, limit 24, sample_seed 0)."""
    from spex.lenses.registrations.data import DataOptions, load_training_set

    options = DataOptions.model_validate({k: v for k, v in _demo("sentiment-data.yaml")["lens_options"].items()
                                          if k != "encoder"})
    return [{"text": r.text, "label": r.label} for r in load_training_set(options)]


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(dict(r), sort_keys=True) + "\n" for r in rows)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return str(path)


# ================================================================================================ running
@dataclass(frozen=True)
class SubjectRun:
    """One subject of one audit run: its recorded ranking (rows with se) and the explanation behind it."""

    subject: str
    n: int
    budget: int
    ranking: Rows
    explanation: Any
    labels: list[str]


class Auditor:
    """Audits a spec at engine level with one seed (see the module docstring), every model call through
    an :class:`AblationEngine` over one persistent store (one engine per batch setting)."""

    def __init__(self, store_root: str) -> None:
        self.store = AblationStore(store_root)
        self.engines: dict[tuple[Any, ...], AblationEngine] = {}
        self.fits: dict[tuple[Any, ...], dict[str, SubjectRun]] = {}

    def engine(self, spec: Any) -> AblationEngine:
        key = (spec.batch.max_batch, spec.batch.token_budget, spec.batch.chunk_size)
        if key not in self.engines:
            self.engines[key] = AblationEngine(self.store, max_batch=spec.batch.max_batch,
                                               token_budget=spec.batch.token_budget,
                                               chunk_size=spec.batch.chunk_size, progress=False)
        return self.engines[key]

    def bound(self, spec_dict: Mapping[str, Any], subject_id: str) -> Any:
        spec = runtime.spec_from(dict(spec_dict))
        return self.engine(spec).bind(runtime.value_function(spec, subject_id))

    def computed(self) -> int:
        return sum(e.total.computed for e in self.engines.values())

    def run(self, spec_dict: Mapping[str, Any], seed: int, *, method: str | None = None,
            estimator: str = DEFAULT_ESTIMATOR) -> dict[str, SubjectRun]:
        """Every subject of the spec explained with ``seed`` (and ``method``, default the spec's)."""
        spec_dict = {**spec_dict, "seed": int(seed)}
        spec = runtime.spec_from(dict(spec_dict))
        method = method or spec.method
        key = (json.dumps(spec_dict, sort_keys=True), method, estimator)
        if key in self.fits:
            return self.fits[key]
        options = spec.method_options if method == spec.method else {}
        out = {}
        for subject in spec.subjects:
            bound = self.engine(spec).bind(runtime.value_function(spec, subject.id))
            n = bound.n_features
            budget = spec.check_budget(n, subject.id) if method == spec.method else method_budget(method, spec, n)
            ex = spex.explain(bound, n, budget=budget, method=method, seed=int(seed), uncertainty=estimator,
                              **options)
            labels = list(bound.feature_labels)
            r = spec.ranking
            tables = interaction_tables(ex.spectrum, labels, index=r.index, order=r.order, record_top=r.record_top,
                                        uncertainty=ex.uncertainty, level=r.confidence)
            out[subject.id] = SubjectRun(subject.id, n, budget, tables.ranking, ex, labels)
        self.fits[key] = out
        return out


def method_budget(method: str, spec: Any, n: int) -> int:
    """The budget a method other than the spec's gets: the spec's (α·n·log2 n), except SPEX, which
    needs its coded design (b = 5 bins of t = 5 at C = 3: 2,688 masks at n <= 64)."""
    if method == "spex":
        return 2688
    return spec.check_budget(n, "budget")


# ================================================================================================ plants
def planted_dir(root: Path, name: str) -> Path:
    return root / "planted" / name


def save_planted_model(source: str, out: Path, edit: Any) -> str:
    """Load ``source`` fresh (not the runtime's shared copy), apply ``edit(loaded)`` to its weights and
    ``save_pretrained`` it (with its tokenizer) to ``out``; reused when ``out`` exists."""
    if (out / "config.json").is_file():
        return str(out)
    loaded = spex.models.load(source, device="cpu")
    with torch.no_grad():
        edit(loaded)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    loaded.model.save_pretrained(tmp)
    loaded.tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return str(out)


def first_order_rows(rows: Rows) -> Rows:
    return [r for r in rows if len(r["members"]) == 1]


def plant_heads(run0: dict[str, SubjectRun], root: Path) -> dict[str, Any]:
    """Zero the output-projection input columns of the highest-ranked single head of seed 0."""
    from spex.lenses.attention_heads import head_sites

    (sub,) = run0.values()
    top = first_order_rows(sub.ranking)[0]
    feature = top["members"][0]
    label = sub.labels[feature]
    layer, head = (int(x) for x in re.fullmatch(r"L(\d+)H(\d+)", label).groups())

    def edit(loaded: Any) -> None:
        site = next(s for s in head_sites(loaded.model) if s.layer == layer)
        site.module.weight[:, head * site.head_dim:(head + 1) * site.head_dim] = 0.0

    folder = save_planted_model(MODEL, planted_dir(root, f"minilm-sentiment-zeroed-{label}"), edit)
    return {"model": folder, "features": [feature], "labels": [label], "baseline_rank": top["rank"],
            "baseline_value": top["value"], "edit": f"attention.output.dense weight columns of head {head} "
                                                  f"in layer {layer} zeroed"}


def plant_features(run0: dict[str, SubjectRun], root: Path) -> dict[str, Any]:
    """Zero the token-embedding row of the highest-ranked single word of seed 0 that is one word
    piece occurring once in the prompt."""
    loaded = runtime.loaded_model(runtime.spec_from(features_spec(MODEL, None)).model)
    tok = loaded.tokenizer
    prompt_ids = tok(FEATURES_PROMPT)["input_ids"]
    (sub,) = run0.values()
    for row in first_order_rows(sub.ranking):
        word = re.sub(r"^\W+|\W+$", "", sub.labels[row["members"][0]])
        ids = tok(word, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and prompt_ids.count(ids[0]) == 1:
            break
    else:
        raise RuntimeError("no ranked single word is one word piece occurring once")
    token = ids[0]

    def edit(model: Any) -> None:
        model.model.get_input_embeddings().weight[token] = 0.0

    folder = save_planted_model(MODEL, planted_dir(root, f"minilm-sentiment-zeroed-word-{word}"), edit)
    return {"model": folder, "features": [row["members"][0]], "labels": [sub.labels[row["members"][0]]],
            "token_id": int(token), "baseline_rank": row["rank"], "baseline_value": row["value"],
            "edit": f"word-embedding row {token} ({word!r}) set to zeros"}


def plant_data(run0: dict[str, SubjectRun], rows: list[dict[str, Any]], root: Path) -> dict[str, Any]:
    """Flip the labels of the training sentences with the largest |first-order value| summed over the
    subjects at seed 0."""
    score = np.zeros(len(rows))
    for sub in run0.values():
        for r in first_order_rows(sub.ranking):
            score[r["members"][0]] += abs(r["value"])
    chosen = sorted(int(i) for i in np.argsort(-score, kind="stable")[:FLIPPED_EXAMPLES])
    flipped = [dict(r) for r in rows]
    for i in chosen:
        flipped[i]["label"] = "negative" if rows[i]["label"] == "positive" else "positive"
    path = write_jsonl(root / "planted" / f"sentiment-train-24-flipped-{'-'.join(map(str, chosen))}.jsonl", flipped)
    return {"train": path, "features": chosen, "labels": [rows[i]["text"] for i in chosen],
            "edit": f"labels of training examples {chosen} flipped",
            "flips": [{"index": i, "text": rows[i]["text"], "from": rows[i]["label"], "to": flipped[i]["label"]}
                      for i in chosen]}


def check_plant(auditor: Auditor, lens: str, base: Mapping[str, Any], cand: Mapping[str, Any],
                features: Sequence[int], count: int = 48) -> dict[str, Any]:
    """The plant against its definition, on ``count`` random masks per subject (through the store):

    * heads: f_planted(S) = f_baseline(S without the head) (the zeroed columns are the head's slice);
    * features / data: f_planted(S) = f_baseline(S) whenever S excludes the planted features (the
      changed embedding row / flipped labels are never read), and differs somewhere when it includes them.
    """
    spec = runtime.spec_from(dict(base))
    out = {}
    for subject in spec.subjects:
        b, c = auditor.bound(base, subject.id), auditor.bound(cand, subject.id)
        n = b.n_features
        masks = np.random.default_rng(12345).random((count, n)) < 0.5
        masks[:, list(features)] = True
        removed = masks.copy()
        removed[:, list(features)] = False
        if lens == "heads":
            equal = float(np.max(np.abs(c(masks) - b(removed))))
            moved = float(np.max(np.abs(c(masks) - b(masks))))
        else:
            equal = float(np.max(np.abs(c(removed) - b(removed))))
            moved = float(np.max(np.abs(c(masks) - b(masks))))
        out[subject.id] = {"max_abs_diff_where_equal": equal, "max_abs_change_where_planted": moved,
                           "masks": count}
    return out


# ================================================================================================ gates
def gate_verdict(config: Mapping[str, Any], diffs: Mapping[str, SubjectDiff], rankings: Mapping[str, Rows]
                 ) -> tuple[str, list[Any]]:
    gates = evaluate_gates(Gates(**config), faithfulness={s: None for s in diffs}, rankings=rankings, diffs=diffs,
                           k=next(iter(diffs.values())).k, level=LEVEL)
    return verdict(gates), gates


def diffs_of(cand: dict[str, SubjectRun], base: dict[str, SubjectRun], k: int, min_effect: float
             ) -> dict[str, SubjectDiff]:
    return {s: diff_rankings(cand[s].ranking, base[s].ranking, k=k, subject=s, fdr=FDR, min_effect=min_effect,
                             level=LEVEL) for s in cand}


def planted_terms(run: SubjectRun, planted: set[int], critical: float) -> list[set[int]]:
    """The members of the run's spectrum that contain a planted feature and whose coefficient is
    distinguishable from 0 (|coefficient| > critical · se)."""
    ex = run.explanation
    members = [set(m) for m in sets.to_tuples(ex.spectrum.members)]
    se = coefficient_standard_errors(ex.uncertainty, ex.spectrum.members, ex.spectrum.n) \
        if ex.uncertainty is not None else np.full(len(members), np.nan)
    with np.errstate(invalid="ignore"):
        sure = np.abs(ex.spectrum.coefficients) > critical * se
    return [m for m, ok in zip(members, sure, strict=True) if ok and m & planted]


def name_changes(diffs: Mapping[str, SubjectDiff], cand: dict[str, SubjectRun], base: dict[str, SubjectRun],
                 planted: Sequence[int]) -> dict[str, Any]:
    """Sort the significant changes (module docstring): *involving* a planted feature; *via a term* —
    the changed set T lies inside a Fourier term U of either version that contains a planted feature
    and is distinguishable from 0 (FBII of order 2 reads F(V) for |V| <= 2, and a plant moves F(V) for
    V without it only through such U ⊇ V: for the heads plant exactly F'(V) = F(V) + F(V ∪ {h}));
    *unrelated* otherwise."""
    critical = float(norm.ppf(0.5 + LEVEL / 2))
    planted_set = set(planted)
    out: dict[str, Any] = {"involving": 0, "via_term": 0, "unrelated": 0, "named_planted": set(),
                           "unrelated_names": [], "significant": 0}
    for s, d in diffs.items():
        terms = planted_terms(cand[s], planted_set, critical) + planted_terms(base[s], planted_set, critical)
        for c in d.significant:
            out["significant"] += 1
            members = set(c.members)
            if members & planted_set:
                out["involving"] += 1
                out["named_planted"] |= members & planted_set
            elif any(members <= u for u in terms):
                out["via_term"] += 1
            else:
                out["unrelated"] += 1
                out["unrelated_names"].append(f"{s}: {c.name()[:60]} ({c.kind}, delta {c.delta:+.3g} "
                                              f"± {c.delta_se:.2g})")
    out["named_planted"] = sorted(out["named_planted"])
    return out


def median_delta_se(pairs: Iterable[tuple[dict[str, SubjectRun], dict[str, SubjectRun]]], k: int) -> float:
    ses = []
    for a, b in pairs:
        for d in diffs_of(a, b, k, 0.0).values():
            ses += [c.delta_se for c in d.tested if c.delta_se is not None]
    return float(np.median(ses))


def null_stats(pairs: Sequence[tuple[dict[str, SubjectRun], dict[str, SubjectRun]]], k: int) -> dict[str, Any]:
    """The tested interactions of the null pairs at min_effect 0: se(delta), |delta|, |z|."""
    deltas, ses, zs, significant = [], [], [], []
    for a, b in pairs:
        for d in diffs_of(a, b, k, 0.0).values():
            for c in d.tested:
                if c.delta_se is None or c.z is None:
                    continue
                deltas.append(abs(c.delta))
                ses.append(c.delta_se)
                zs.append(abs(c.z))
            significant += [abs(c.delta) for c in d.significant]
    q = lambda a, p: float(np.quantile(a, p)) if len(a) else None  # noqa: E731
    return {"tested": len(deltas), "median_delta_se": q(ses, 0.5), "median_abs_delta": q(deltas, 0.5),
            "p95_abs_delta": q(deltas, 0.95), "max_abs_delta": q(deltas, 1.0),
            "fraction_abs_z_above_1.96": float(np.mean(np.array(zs) > 1.96)) if zs else None,
            "p95_abs_z": q(zs, 0.95), "significant_at_min_effect_0": len(significant),
            "largest_significant_abs_delta": max(significant) if significant else None}


def evaluate_pairs(pairs: Sequence[tuple[dict[str, SubjectRun], dict[str, SubjectRun]]], k: int,
                   configs: Mapping[str, Mapping[str, Any]], planted: Sequence[int] | None) -> dict[str, Any]:
    """Per gate configuration: verdict counts over ``pairs`` (candidate, baseline); with ``planted``,
    what the significant changes name."""
    out: dict[str, Any] = {}
    for name, config in configs.items():
        min_effect = float(config.get("min_effect", 0.0))
        counts = {"passed": 0, "failed": 0, "undecided": 0}
        naming = {"runs_naming_planted": 0, "runs_with_unrelated": 0, "significant": [], "involving": [],
                  "via_term": [], "unrelated": [], "planted_named_count": [], "unrelated_examples": []}
        for cand, base in pairs:
            diffs = diffs_of(cand, base, k, min_effect)
            state, _ = gate_verdict(config, diffs, {s: r.ranking for s, r in cand.items()})
            counts[state] += 1
            if planted is not None and "max_significant_changes" in config:
                named = name_changes(diffs, cand, base, planted)
                naming["runs_naming_planted"] += bool(named["named_planted"])
                naming["runs_with_unrelated"] += named["unrelated"] > 0
                for key in ("significant", "involving", "via_term", "unrelated"):
                    naming[key].append(named[key])
                naming["planted_named_count"].append(len(named["named_planted"]))
                if named["unrelated_names"] and len(naming["unrelated_examples"]) < 6:
                    naming["unrelated_examples"] += named["unrelated_names"][:2]
        total = len(pairs)
        entry: dict[str, Any] = {"config": dict(config), "pairs": total, **counts,
                                 "failed_rate": counts["failed"] / total if total else None,
                                 "undecided_rate": counts["undecided"] / total if total else None}
        if planted is not None and "max_significant_changes" in config:
            entry["naming"] = {
                "runs_naming_planted": naming["runs_naming_planted"],
                "runs_with_unrelated": naming["runs_with_unrelated"],
                "mean_significant": float(np.mean(naming["significant"])),
                "mean_involving": float(np.mean(naming["involving"])),
                "mean_via_term": float(np.mean(naming["via_term"])),
                "mean_unrelated": float(np.mean(naming["unrelated"])),
                "mean_planted_named": float(np.mean(naming["planted_named_count"])),
                "unrelated_examples": naming["unrelated_examples"],
            }
        out[name] = entry
    return out


def gate_configs(lens: str, se_unit: float) -> dict[str, dict[str, Any]]:
    configs: dict[str, dict[str, Any]] = {"new min_effect=0": {"max_significant_changes": 0, "drift_fdr": FDR,
                                                               "min_effect": 0.0}}
    for m in SE_MULTIPLES:
        configs[f"new min_effect={m:g}·se"] = {"max_significant_changes": 0, "drift_fdr": FDR,
                                              "min_effect": float(m * se_unit)}
    for effect in CANDIDATE_EFFECTS.get(lens, ()):
        configs[f"new min_effect={effect:g}"] = {"max_significant_changes": 0, "drift_fdr": FDR,
                                                "min_effect": float(effect)}
    for allowed in ALLOWANCES:  # is max_significant_changes: 0 right? the same diffs with a few changes allowed
        for m in (0.0, 6.0):
            configs[f"new allow {allowed}, min_effect={m:g}·se"] = {
                "max_significant_changes": allowed, "drift_fdr": FDR, "min_effect": float(m * se_unit)}
    configs.update(copy.deepcopy(OLD_GATES))
    if lens == "data":
        configs.update(copy.deepcopy(DATA_OLD_GATES))
    return configs


# ================================================================================================ one lens
def lens_specs(lens: str, root: Path) -> dict[str, Any]:
    """The baseline spec of a lens (the candidate's is built once the plant is chosen)."""
    if lens == "heads":
        return heads_spec(MODEL)
    if lens == "features":
        vf = runtime.value_function(runtime.spec_from(features_spec(MODEL, None)), "two-sentences")
        return features_spec(MODEL, vf.target)  # the predicted class, fixed so both versions score it
    if lens == "data":
        return data_spec(MODEL, write_jsonl(root / "sentiment-train-24.jsonl", demo_training_rows()))
    raise ValueError(lens)


def candidate_spec(lens: str, base: Mapping[str, Any], plant: Mapping[str, Any]) -> dict[str, Any]:
    if lens == "data":
        return {**base, "lens_options": {**base["lens_options"], "train": plant["train"]}}
    return {**base, "model": plant["model"]}


def run_seeds(auditor: Auditor, spec: Mapping[str, Any], seeds: Sequence[int], label: str) -> list[dict[str, SubjectRun]]:
    runs = []
    for seed in seeds:
        before, start = auditor.computed(), time.perf_counter()
        runs.append(auditor.run(spec, seed))
        if seed % 5 == 0 or seed == seeds[-1]:
            log(f"    {label} seed {seed}: {auditor.computed() - before} new model calls, "
                f"{time.perf_counter() - start:.1f} s (load {load_avg()})")
    return runs


def bench_lens(lens: str, auditor: Auditor, seeds: Sequence[int], root: Path) -> dict[str, Any]:
    started = time.perf_counter()
    calls0 = auditor.computed()
    base_spec = lens_specs(lens, root)
    log(f"\n== {lens} lens: baseline, {len(seeds)} seeds ==")
    base_runs = run_seeds(auditor, base_spec, seeds, "baseline")
    if lens == "heads":
        plant = plant_heads(base_runs[0], root)
    elif lens == "features":
        plant = plant_features(base_runs[0], root)
    else:
        plant = plant_data(base_runs[0], demo_training_rows(), root)
    cand_spec = candidate_spec(lens, base_spec, plant)
    plant["check"] = check_plant(auditor, lens, base_spec, cand_spec, plant["features"])
    log(f"  plant: {plant['edit']} (baseline seed 0: {plant['labels']}); check: {plant['check']}")
    log(f"== {lens} lens: planted, {len(seeds)} seeds ==")
    cand_runs = run_seeds(auditor, cand_spec, seeds, "planted")
    k = runtime.spec_from(base_spec).ranking.top_k
    s = len(seeds)
    null_consecutive = [(base_runs[i + 1], base_runs[i]) for i in range(s - 1)]
    null_all = [(base_runs[j], base_runs[i]) for i, j in itertools.combinations(range(s), 2)]
    detect_same = [(cand_runs[i], base_runs[i]) for i in range(s)]
    detect_cross = [(cand_runs[i], base_runs[(i + 1) % s]) for i in range(s)]
    se_unit = median_delta_se(null_consecutive, k)
    configs = gate_configs(lens, se_unit)
    log(f"  evaluating gates (median se(delta) on null pairs: {se_unit:.4g})")
    sub0 = next(iter(base_runs[0].values()))
    result = {
        "lens": lens, "baseline_spec": base_spec, "candidate_spec": cand_spec, "plant": plant,
        "subjects": {sid: {"n": r.n, "budget": r.budget} for sid, r in base_runs[0].items()},
        "seeds": list(seeds), "top_k": k, "fdr": FDR, "level": LEVEL, "median_delta_se": se_unit,
        "min_effect_grid": {name: c.get("min_effect") for name, c in configs.items() if "min_effect" in c},
        "null_stats": null_stats(null_consecutive, k),
        "false_alarms": {"consecutive": evaluate_pairs(null_consecutive, k, configs, None),
                         "all_pairs": evaluate_pairs(null_all, k, configs, None)},
        "detection": {"same_seed": evaluate_pairs(detect_same, k, configs, plant["features"]),
                      "cross_seed": evaluate_pairs(detect_cross, k, configs, plant["features"])},
        "model_calls": auditor.computed() - calls0, "seconds": time.perf_counter() - started,
        "support_sizes": [int(r.explanation.diagnostics.get("support_size", -1)) for r in base_runs[0].values()],
        "labels_sample": sub0.labels[:3],
    }
    log(f"  {lens}: {result['model_calls']} model calls, {result['seconds']:.0f} s")
    return result


# ================================================================================================ end to end
def end_to_end(result: Mapping[str, Any], root: Path, min_effect: float, seed: int = 0) -> dict[str, Any]:
    """One seed of the features lens through the real release path without Prefect: the baseline and
    the planted folder registered as versions 1 and 2 of an MLflow registered model (a fresh SQLite
    metadata DB and MLflow store in a temp data dir whose ``ablations`` is this benchmark's store, so
    no mask is measured twice), ``spex.audit.run`` on version 1, then the release audit of version 2
    against it with the new gate; returns the verdict, the gate and the registry tags."""
    import tempfile

    from mlflow.tracking import MlflowClient

    from spex.audit.pipeline import run as audit_run
    from spex.models.builtins import sentiment_folder

    data_dir = Path(tempfile.mkdtemp(prefix="spex-gates-e2e-"))
    (data_dir / "ablations").symlink_to(root / "ablations", target_is_directory=True)
    previous = os.environ.get("SPEX_DATA_DIR")
    os.environ["SPEX_DATA_DIR"] = str(data_dir)
    try:
        client = MlflowClient(settings.mlflow_tracking_uri())
        name = "spex-bench-planted-features"
        client.create_registered_model(name)
        experiment = client.create_experiment("bench-gates-models")
        for folder, label in ((sentiment_folder(seed=0), "baseline"), (Path(result["plant"]["model"]), "planted")):
            run_id = client.create_run(experiment, run_name=label).info.run_id
            client.log_artifacts(run_id, str(folder), "model")
            client.set_terminated(run_id)
            client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags={"bench": label})
        spec = {**result["baseline_spec"], "name": "bench-gates-features-e2e", "seed": seed,
                "model": f"models:/{name}/2", "baseline": f"models:/{name}/1",
                "gates": {"max_significant_changes": 0, "drift_fdr": FDR, "min_effect": float(min_effect)}}
        started = time.perf_counter()
        base = audit_run(spec, model=f"models:/{name}/1", kind="audit")
        cand = audit_run(spec, model=f"models:/{name}/2", kind="release", baseline_model=base.model,
                         baseline_audit_id=base.audit_id)
        gate = next(g for g in cand.gates if g.metric == "max_significant_changes")
        tested = [c for d in (cand.diffs or {}).values() if d for c in d["tested"]]
        return {"spec": spec, "baseline_audit": base.audit_id, "release_audit": cand.audit_id,
                "verdict": cand.verdict, "passed": cand.passed, "gate_state": gate.state, "gate_value": gate.value,
                "changes": gate.details.get("changes"), "registry_tags": cand.registry_tags,
                "unresolved": [{"name": c["name"], "delta": c["delta"], "delta_se": c["delta_se"]} for c in tested
                               if c.get("resolution") == "unresolved"],
                "tested": [{"name": c["name"], "delta": c["delta"], "delta_se": c["delta_se"], "q": c["q_value"],
                            "significant": c["significant"]} for c in tested],
                "masks_computed": cand.model_calls["masks_computed"] + base.model_calls["masks_computed"],
                "seconds": time.perf_counter() - started, "data_dir": str(data_dir)}
    finally:
        if previous is None:
            os.environ.pop("SPEX_DATA_DIR", None)
        else:
            os.environ["SPEX_DATA_DIR"] = previous


# ================================================================================================ tables
def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def lens_table(r: Mapping[str, Any]) -> str:
    fa_c, fa_a = r["false_alarms"]["consecutive"], r["false_alarms"]["all_pairs"]
    d_s, d_x = r["detection"]["same_seed"], r["detection"]["cross_seed"]
    lines = [f"**{r['lens']}** — plant: {r['plant']['edit']}; median se(Δ) on the null pairs "
             f"{r['median_delta_se']:.3g}",
             "",
             "| gate | min_effect | false alarms, consecutive (n) | false alarms, all pairs (n) | undecided (all pairs) "
             "| detection, same seed | detection, other seed | runs naming the plant (mean planted named) | mean significant "
             "(involving / via a term / unrelated) | runs with an unrelated change |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in fa_c:
        cfg = fa_c[name]["config"]
        effect = cfg.get("min_effect")
        naming = d_s[name].get("naming")
        named = (f"{naming['runs_naming_planted']}/{d_s[name]['pairs']} ({naming['mean_planted_named']:.1f} of "
                 f"{len(r['plant']['features'])})") if naming else "–"
        mix = (f"{naming['mean_significant']:.1f} ({naming['mean_involving']:.1f} / {naming['mean_via_term']:.1f} / "
               f"{naming['mean_unrelated']:.1f})") if naming else "–"
        unrelated = f"{naming['runs_with_unrelated']}/{d_s[name]['pairs']}" if naming else "–"
        lines.append(
            f"| {name} | {'–' if effect is None else f'{effect:.3g}'} | {pct(fa_c[name]['failed_rate'])} "
            f"({fa_c[name]['pairs']}) | {pct(fa_a[name]['failed_rate'])} ({fa_a[name]['pairs']}) | "
            f"{pct(fa_a[name]['undecided_rate'])} | {pct(d_s[name]['failed_rate'])} | {pct(d_x[name]['failed_rate'])} "
            f"| {named} | {mix} | {unrelated} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lenses", nargs="+", default=["data", "features", "heads"])
    parser.add_argument("--seeds", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the model calls")
    parser.add_argument("--root", default=str(settings.data_dir() / "benchmarks"),
                        help="ablation store and planted folders (reused across runs and by intervals.py)")
    parser.add_argument("--out", default=str(RESULTS / "gates.json"))
    parser.add_argument("--end-to-end-min-effect", type=float, default=None,
                        help="also run one seed of the features lens through spex.audit.run and an MLflow registry "
                             "with this min_effect (needs the features lens in --lenses)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.root)
    auditor = Auditor(str(root / "ablations"))
    seeds = list(range(args.seeds))
    meta = {"machine": platform.platform(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": args.threads, "load_at_start": load_avg(),
            "date": time.strftime("%Y-%m-%d"), "model": MODEL, "commit": _commit()}
    log(f"gates benchmark: lenses {args.lenses}, seeds 0..{args.seeds - 1}, load {load_avg()}")
    results = {}
    for lens in args.lenses:
        results[lens] = bench_lens(lens, auditor, seeds, root)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"meta": {**meta, "load_at_end": load_avg()}, "lenses": results},
                                             indent=1, default=_json_default))
    if args.end_to_end_min_effect is not None and "features" in results:
        log(f"\n== end to end: features lens, seed 0, min_effect {args.end_to_end_min_effect} ==")
        e2e = end_to_end(results["features"], root, args.end_to_end_min_effect)
        results["features"]["end_to_end"] = e2e
        log(f"  verdict {e2e['verdict']} (gate {e2e['gate_state']}, {e2e['gate_value']} significant changes: "
            f"{[c['name'] for changes in (e2e['changes'] or {}).values() for c in changes]}); registry tags "
            f"{e2e['registry_tags']}; {e2e['masks_computed']} masks computed, {e2e['seconds']:.0f} s")
        Path(args.out).write_text(json.dumps({"meta": {**meta, "load_at_end": load_avg()}, "lenses": results},
                                             indent=1, default=_json_default))
    log("")
    for r in results.values():
        log(lens_table(r) + "\n")
    log(f"wrote {args.out} (load {load_avg()})")


def _commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    except OSError:
        return "-"


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, set):
        return sorted(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    raise TypeError(type(x))


if __name__ == "__main__":
    main()
