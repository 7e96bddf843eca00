"""Ablation and lenses benchmark (issue 3): the ablation engine and the three lenses on the real built-in
models, side by side with the naive way, on the same masks, in one run. Prints one table per part and a
combined markdown table; writes JSON under benchmarks/results/.

    python benchmarks/ablation.py            # the default run (8-10 minutes on 2 busy CPU cores)
    python benchmarks/ablation.py --quick    # 1.5-3-minute smoke variant (fewer masks, 1+2 subjects, alpha 2, 4,
                                             # 100 held-out masks; it overrides those options),
                                             # written to $TMPDIR/spex-ablation-quick.json, never over the results

Parts:

1. features lens, SmolLM2-135M-Instruct, a ~60-word prompt: masks/s of the engine (batches packed by a token
   budget, template-prefix KV cache, logits only where scored) vs a naive loop of one masked prompt per forward
   (build the masked prompt, apply the chat template, one forward, teacher-forced log-prob of the same target:
   Captum's ``forward_in_tokens=False`` path) and vs Captum's default path (``forward_in_tokens=True``,
   ``use_cached_outputs=True``: one prefill, then one cached decode step per target token), same masks.
2. heads lens: B head masks in one forward vs one mask per forward (SmolLM2 capitals task, MiniLM sentiment).
3. data lens: retrainings/s of the batched LogisticTrainer vs a loop of scikit-learn LogisticRegression fits.
4. end to end: held-out R² (values from the real model on 200 uniform held-out masks per subject) of our
   ProxySPEX, our linear baseline and shapiq 1.4.1's ProxySPEX at budget alpha*n*log2(n), alpha = 2, 4, 8, every
   model call through one AblationEngine + store, so no mask is ever computed twice:
   * ProxySPEX and linear on the same i.i.d. uniform masks (``masks.uniform`` is prefix-consistent, so the
     alpha = 2, 4, 8 runs cost only the alpha = 8 model calls); ProxySPEX therefore runs here with
     ``pair_complements=False``; "ProxySPEX paired" is its default (antithetic pairs), whose complements are
     new model calls (default: every alpha on MiniLM, alpha 2 on SmolLM2);
   * shapiq "same masks": shapiq's ProxySPEX fitted on exactly those masks and stored values (its sampler is
     replaced by our masks: zero new model calls; the algorithms alone are compared);
   * shapiq "own masks": shapiq samples its own coalitions; the ones not in the store are new model calls,
     counted and reported (default: every alpha on MiniLM, alpha 2 on SmolLM2).

Threads: torch and BLAS/OpenMP run with ``--threads`` (default 1) threads for every side of every comparison
(``torch.set_num_threads`` + ``threadpool_limits``); the math outside model calls runs single-threaded
(spex.explain's default; shapiq under threadpool_limits(1)).
On a shared 2-core machine two torch threads stall behind other processes (measured ~6x slower).
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
from spex.data import load_head_task, load_prompts, load_sentiment  # noqa: E402
from spex.engine import sampling as mask_sampling  # noqa: E402
from spex.engine import sets  # noqa: E402
from spex.engine.synthetic import PlantedGame  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SMOLLM2 = "builtin:smollm2-135m-instruct"
MINILM_SENTIMENT = "builtin:minilm-sentiment"
MINILM_ENCODER = "builtin:minilm-l6"

# End-to-end SmolLM2 subjects: the three prompts of spex/data/prompts.json trimmed to 20-22 words, so that
# alpha = 8 (about 700-780 masks each) plus 200 held-out masks fit the run's time on two CPU cores.
E2E_PROMPTS = [
    "The restaurant is not bad, but the portions are small and the waiter was rude. Should I book it? Answer yes or no.",
    "The laptop screen is beautiful and the keyboard is great, but the battery barely lasts two hours. Should we keep it?",
    "Tom has three apples. He gives one to Mary and buys five more. How many apples does Tom have now?",
]


def now() -> float:
    return time.perf_counter()


# ============================================================================================ part 1: features
def naive_logprob(loaded: Any, vf: Any, keep: np.ndarray) -> tuple[float, int]:
    """Captum-style (forward_in_tokens=False): masked prompt -> chat template -> tokens -> one unpadded forward
    of prompt + target -> summed log-prob of the target. No batching, no cache, logits at every position."""
    tok = loaded.tokenizer
    content = vf.masked_prompt(keep)
    text = tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
    prompt = tok(text, add_special_tokens=False)["input_ids"]
    target = vf.target_ids
    ids = torch.tensor([list(prompt) + list(target)])
    logits = loaded.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].float()
    logp = torch.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(target)], dim=-1)
    value = float(logp[torch.arange(len(target)), torch.tensor(target)].sum())
    return value, len(prompt) + len(target)


def captum_default_logprob(loaded: Any, vf: Any, keep: np.ndarray) -> tuple[float, int]:
    """Captum's default LLMAttribution path (forward_in_tokens=True, use_cached_outputs=True): one prefill of
    the masked prompt, then one cached decode step per target token, log-prob of each target token."""
    tok = loaded.tokenizer
    content = vf.masked_prompt(keep)
    text = tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
    prompt = list(tok(text, add_special_tokens=False)["input_ids"])
    target = list(vf.target_ids)
    ids = torch.tensor([prompt])
    from spex.models.scoring import accepts

    cache_arg = "cache" if accepts(loaded.model, "cache") else "past_key_values"  # transformers renamed it
    out = loaded.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
    total = 0.0
    length = len(prompt)
    for j, t in enumerate(target):
        total += float(torch.log_softmax(out.logits[0, -1].float(), dim=-1)[t])
        if j + 1 < len(target):
            length += 1
            cache = getattr(out, "cache", None) or out.past_key_values
            out = loaded.model(input_ids=torch.tensor([[t]]), attention_mask=torch.ones(1, length, dtype=torch.long),
                               use_cache=True, **{cache_arg: cache})
    return total, len(prompt) + len(target)


def one_per_forward(score: Any, loaded: Any, vf: Any, masks: np.ndarray) -> tuple[list[float], int, float]:
    """A baseline's loop, one mask at a time: (values, tokens, seconds)."""
    values, tokens = [], 0
    t0 = now()
    with torch.inference_mode():
        for keep in masks:
            v, c = score(loaded, vf, keep)
            values.append(v)
            tokens += c
    return values, tokens, now() - t0


def model_peak(loaded: Any, rows: int, length: int, repeats: int = 2) -> dict[str, float]:
    """The model's own forward tokens/s on ``rows`` x ``length`` random tokens (last logits only; best of
    ``repeats`` after a warm-up): the ceiling of any batching scheme on this hardware."""
    from spex.models.scoring import accepts

    gen = torch.Generator().manual_seed(0)
    vocab = int(loaded.model.config.vocab_size)
    ids = torch.randint(0, vocab, (rows, length), generator=gen)
    kwargs = {"logits_to_keep": 1} if accepts(loaded.model, "logits_to_keep") else {}
    loaded.model(input_ids=ids[:1], **kwargs)  # warm-up
    best = math.inf
    for _ in range(repeats):
        t0 = now()
        loaded.model(input_ids=ids, **kwargs)
        best = min(best, now() - t0)
    return {"rows": rows, "length": length, "seconds": best, "tokens_per_s": rows * length / best}


def part_features(smollm: Any, args: argparse.Namespace) -> dict[str, Any]:
    prompt = load_prompts("smollm2")[1]
    t0 = now()
    vf = spex.lenses.features(smollm, prompt, max_new_tokens=25)  # 25: Captum's default max_new_tokens
    build = now() - t0
    masks = mask_sampling.uniform(vf.n_features, args.feature_masks, mask_sampling.rng(args.seed, "bench-features"))
    masks[0] = True
    with torch.inference_mode():
        vf.compute(mask_sampling.uniform(vf.n_features, 2, mask_sampling.rng(args.seed, "warm")))  # warm-up, unstored
        naive_logprob(smollm, vf, masks[0])
    # Interleaved rounds (engine, naive, Captum default on each slice of the masks in turn), so a load spike
    # from other processes on the shared cores hits every side alike instead of one of them.
    k = min(args.captum_masks, len(masks))
    slices = np.array_split(np.arange(len(masks)), args.rounds)
    captum_slices = np.array_split(np.arange(k), args.rounds)
    ours = np.empty(len(masks))
    ours_s = naive_s = captum_s = 0.0
    naive_vals, naive_tokens, captum_vals, captum_tokens = [], 0, [], 0
    stats = None
    with tempfile.TemporaryDirectory(prefix="spex-bench-") as tmp:
        engine = AblationEngine(AblationStore(tmp), token_budget=args.token_budget, max_batch=args.max_batch, progress=False)
        for part, cpart in zip(slices, captum_slices):
            t0 = now()
            ours[part] = engine.values(vf, masks[part])
            ours_s += now() - t0
            if stats is None:
                stats = engine.last
            else:
                stats.add(engine.last)
            vals, count, seconds = one_per_forward(naive_logprob, smollm, vf, masks[part])
            naive_vals += vals
            naive_tokens += count
            naive_s += seconds
            vals, count, seconds = one_per_forward(captum_default_logprob, smollm, vf, masks[cpart])
            captum_vals += vals
            captum_tokens += count
            captum_s += seconds
    stats = stats.as_dict()
    tokens = float(vf.cost(masks).sum())
    length = int(round(tokens / len(masks)))
    with torch.inference_mode():
        peak_single = model_peak(smollm, 1, length, repeats=3)
        peak = model_peak(smollm, args.peak_rows, length)
    naive_vals_a, captum_vals_a = np.array(naive_vals), np.array(captum_vals)
    rows = [
        {"side": "engine", "what": f"batched (max_batch {args.max_batch}, token_budget {args.token_budget}), "
                                   f"prefix KV cache ({vf.describe()['prefix_cache_tokens']} tokens), logits_to_keep",
         "masks": len(masks), "seconds": ours_s, "masks_per_s": len(masks) / ours_s, "tokens_per_s": tokens / ours_s,
         "max_abs_diff": 0.0, "engine_stats": stats},
        {"side": "naive", "what": "one masked prompt per forward, teacher forced (Captum forward_in_tokens=False)",
         "masks": len(masks), "seconds": naive_s, "masks_per_s": len(masks) / naive_s,
         "tokens_per_s": naive_tokens / naive_s, "max_abs_diff": float(np.abs(naive_vals_a - ours).max())},
        {"side": "captum-default", "what": "prefill + one cached decode step per target token (Captum default)",
         "masks": k, "seconds": captum_s, "masks_per_s": k / captum_s if captum_s else float("nan"),
         "tokens_per_s": captum_tokens / captum_s if captum_s else float("nan"),
         "max_abs_diff": float(np.abs(captum_vals_a - ours[:k]).max()) if k else float("nan")},
    ]
    for r in rows:
        r["speedup_of_engine"] = rows[0]["masks_per_s"] / r["masks_per_s"]
    return {"model": SMOLLM2, "prompt": prompt, "words": len(prompt.split()), "n": vf.n_features,
            "target": vf.target, "target_tokens": len(vf.target_ids), "mean_tokens_per_mask": tokens / len(masks),
            "lens_build_seconds": build, "rows": rows, "model_peak": peak, "model_single_row": peak_single,
            "engine_fraction_of_peak": rows[0]["tokens_per_s"] / peak["tokens_per_s"]}


# ============================================================================================ part 2: heads
def heads_case(name: str, vf: Any, n_masks: int, args: argparse.Namespace, batch: int) -> dict[str, Any]:
    masks = mask_sampling.uniform(vf.n_features, n_masks, mask_sampling.rng(args.seed, f"bench-heads-{name}"))
    masks[0] = True
    with torch.inference_mode():
        vf.compute(masks[:1])  # warm-up
    with tempfile.TemporaryDirectory(prefix="spex-bench-") as tmp:
        engine = AblationEngine(AblationStore(tmp), max_batch=batch, progress=False)
        t0 = now()
        ours = engine.values(vf, masks)
        ours_s = now() - t0
        stats = engine.last.as_dict()
    t0 = now()
    single = np.array([vf(m[None])[0] for m in masks])
    single_s = now() - t0
    return {"case": name, "n": vf.n_features, "prompts": len(vf.prompts), "masks": len(masks), "batch": batch,
            "ours_seconds": ours_s, "ours_masks_per_s": len(masks) / ours_s, "single_seconds": single_s,
            "single_masks_per_s": len(masks) / single_s, "speedup": single_s / ours_s,
            "max_abs_diff": float(np.abs(single - ours).max()), "value_range": float(np.ptp(ours)),
            "full_value": vf.full_value, "engine_stats": stats}


def part_heads(smollm: Any, minilm: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    prompts, answers = load_head_task("capitals")
    out = [heads_case("SmolLM2 capitals", spex.lenses.heads(smollm, prompts, answers), args.head_masks, args,
                      args.head_batch)]
    test = [r for r in load_sentiment() if r["split"] == "test"][:16]
    vf = spex.lenses.heads(minilm, [r["text"] for r in test], [r["label"] for r in test])
    out.append(heads_case("MiniLM sentiment", vf, args.head_masks * 2, args, args.head_batch))
    return out


# ============================================================================================ part 3: data
def part_data(args: argparse.Namespace) -> dict[str, Any]:
    from spex.lenses.training_data import LogisticTrainer, SklearnTrainer

    rows = load_sentiment()
    train = [r for r in rows if r["split"] == "train"]
    target = [r for r in rows if r["split"] == "test"][0]
    texts, labels = [r["text"] for r in train], [r["label"] for r in train]
    t0 = now()
    fast = spex.lenses.data(texts, labels, target["text"], target["label"], encoder=MINILM_ENCODER,
                            trainer=LogisticTrainer())
    embed_s = now() - t0
    table = dict(zip(fast.problem.texts + [fast.problem.target_text],
                     np.vstack([fast.problem.embeddings, fast.problem.target_embedding])))

    def encoder(batch: list[str]) -> np.ndarray:  # the same embeddings, not computed twice
        return np.vstack([table[t] for t in batch])

    ref = spex.lenses.data(texts, labels, target["text"], target["label"], encoder=encoder, trainer=SklearnTrainer())
    masks = mask_sampling.uniform(fast.n_features, args.data_masks, mask_sampling.rng(args.seed, "bench-data"))
    masks[0] = True
    with tempfile.TemporaryDirectory(prefix="spex-bench-") as tmp:
        engine = AblationEngine(AblationStore(tmp), max_batch=args.data_batch, progress=False)
        t0 = now()
        ours = engine.values(fast, masks)
        ours_s = now() - t0
        big = mask_sampling.uniform(fast.n_features, args.data_big, mask_sampling.rng(args.seed, "bench-data-big"))
        t0 = now()
        engine.values(fast, big)
        big_s = now() - t0
    t0 = now()
    sk = ref.compute(masks)
    sk_s = now() - t0
    diff = np.abs(sk - ours)
    return {"n_train": fast.n_features, "target": target["text"], "target_label": target["label"],
            "encoder": MINILM_ENCODER, "embed_seconds": embed_s, "masks": len(masks),
            "ours": {"trainer": "LogisticTrainer", "options": fast.trainer.options(), "seconds": ours_s,
                     "retrainings_per_s": len(masks) / ours_s},
            "ours_large": {"masks": len(big), "seconds": big_s, "retrainings_per_s": len(big) / big_s},
            "sklearn": {"trainer": "SklearnTrainer", "options": ref.trainer.options(), "seconds": sk_s,
                        "retrainings_per_s": len(masks) / sk_s},
            "speedup": sk_s / ours_s, "speedup_large": (len(big) / big_s) / (len(masks) / sk_s),
            "max_abs_diff": float(diff.max()),
            "max_abs_diff_over_std": float(diff.max() / max(np.std(sk), 1e-12)),
            "pearson": float(np.corrcoef(sk, ours)[0, 1]), "value_std": float(np.std(sk))}


# ============================================================================================ part 4: end to end
def mobius_predict(n: int, mobius: dict[tuple[int, ...], float], masks: np.ndarray) -> np.ndarray:
    """Evaluate a Möbius expansion (shapiq's output) on masks."""
    items = [(k, v) for k, v in mobius.items() if v != 0]
    if not items:
        return np.zeros(len(masks))
    members = sets.from_tuples([k for k, _ in items])
    return PlantedGame(n, members, np.array([v for _, v in items])).clean(masks)


class _FixedSampler:
    """Stands in for shapiq's CoalitionSampler: hands shapiq our training masks (no new model calls)."""

    def __init__(self, masks: np.ndarray) -> None:
        self.coalitions_matrix = np.asarray(masks, dtype=bool)

    def sample(self, budget: int) -> None:
        if budget != len(self.coalitions_matrix):
            raise ValueError(f"budget {budget} != {len(self.coalitions_matrix)} fixed masks")


class CountingGame:
    """The engine-bound value function as a shapiq game, recording what the store already had."""

    def __init__(self, bound: Any) -> None:
        self.bound, self.requested, self.computed, self.from_store, self.seconds = bound, 0, 0, 0, 0.0

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        t0 = now()
        out = self.bound(np.asarray(coalitions, dtype=bool))
        self.seconds += now() - t0
        last = self.bound.engine.last
        self.requested += last.requested
        self.computed += last.computed
        self.from_store += last.from_store
        return out


def run_shapiq(bound: Any, n: int, budget: int, seed: int, holdout: np.ndarray, y_holdout: np.ndarray,
               fixed: np.ndarray | None) -> dict[str, Any]:
    import shapiq

    game = CountingGame(bound)
    np.random.seed(seed)
    approximator = shapiq.ProxySPEX(n=n, index="FBII", max_order=None, random_state=seed)
    if fixed is not None:
        approximator._uniform_sampler = _FixedSampler(fixed)
    t0 = now()
    try:
        with threadpool_limits(1):
            values = approximator.approximate(budget, game)
    except Exception as exc:  # report, don't hide
        return {"error": f"{type(exc).__name__}: {exc}", "new_calls": game.computed}
    total = now() - t0
    mobius = {tuple(int(i) for i in k): float(values.values[j]) for k, j in values.interaction_lookup.items()}
    train = fixed if fixed is not None else None
    pred = mobius_predict(n, mobius, holdout)
    return {"r2": spex.engine.heldout.r2(y_holdout, pred), "pred": pred, "seconds": total - game.seconds,
            "requested": game.requested, "new_calls": game.computed, "from_store": game.from_store,
            "support": sum(1 for v in mobius.values() if v != 0), "train_masks": None if train is None else len(train)}


def run_ours(bound: Any, n: int, budget: int, method: str, seed: int, holdout: np.ndarray, y_holdout: np.ndarray,
             **options: Any) -> dict[str, Any]:
    engine = bound.engine
    before = engine.total.computed
    ex = spex.explain(bound, n, budget=budget, method=method, seed=seed, uncertainty="cluster", **options)
    pred = ex.spectrum.predict(holdout)
    orders = ex.spectrum.orders if len(ex.spectrum) else np.zeros(0)
    return {"r2": spex.engine.heldout.r2(y_holdout, pred), "pred": pred, "seconds": ex.seconds["outside_value_calls"],
            "new_calls": engine.total.computed - before, "unique_masks": ex.n_calls, "support": len(ex.spectrum),
            "max_order": int(orders.max()) if len(orders) else 0, "exact": bool(ex.diagnostics.get("exact", False))}


def training_masks(n: int, budget: int, seed: int, paired: bool) -> np.ndarray:
    """The masks spex.explain's ProxySPEX draws for (n, budget, seed) (see spex/engine/methods/proxyspex.py)."""
    return mask_sampling.uniform(n, budget, mask_sampling.rng(seed, "train"), pair_complements=paired)


def e2e_subject(model_name: str, label: str, vf: Any, engine: AblationEngine, args: argparse.Namespace,
                alphas: list[float], shapiq_own_alphas: list[float], paired_alphas: list[float]) -> dict[str, Any]:
    """One subject: held-out values, then per alpha ProxySPEX / linear / shapiq on the same uniform masks
    (+ ProxySPEX with its default antithetic pairs and shapiq on its own masks where asked)."""
    bound = engine.bind(vf)
    n = vf.n_features
    start_calls, start_s = engine.total.computed, now()
    holdout = mask_sampling.holdout(n, args.holdout, seed=args.seed)
    t0 = now()
    y_holdout = bound(holdout)
    holdout_s = now() - t0
    holdout_keys = [m.tobytes() for m in np.packbits(holdout, axis=1)]

    def unseen_by(train: np.ndarray) -> np.ndarray:
        keys = {m.tobytes() for m in np.packbits(train, axis=1)}
        return np.array([k not in keys for k in holdout_keys])

    runs = []
    for alpha in alphas:
        budget = int(alpha * n * math.log2(n))
        row: dict[str, Any] = {"alpha": alpha, "budget": budget}
        train = training_masks(n, budget, args.seed, False)  # what linear draws, and ProxySPEX without pairs
        unseen = unseen_by(train)
        row["holdout_in_train"] = int((~unseen).sum())
        row["proxyspex"] = run_ours(bound, n, budget, "proxyspex", args.seed, holdout, y_holdout, pair_complements=False)
        row["linear"] = run_ours(bound, n, budget, "linear", args.seed, holdout, y_holdout)
        keeps = {"proxyspex": unseen, "linear": unseen, "shapiq_same": unseen}
        if not args.no_shapiq:
            row["shapiq_same"] = run_shapiq(bound, n, budget, args.seed, holdout, y_holdout, fixed=train)
        if alpha in paired_alphas:
            row["proxyspex_paired"] = run_ours(bound, n, budget, "proxyspex", args.seed, holdout, y_holdout,
                                               pair_complements=True)
            keeps["proxyspex_paired"] = unseen_by(training_masks(n, budget, args.seed, True))
        if not args.no_shapiq and alpha in shapiq_own_alphas:
            row["shapiq_own"] = run_shapiq(bound, n, budget, args.seed, holdout, y_holdout, fixed=None)
        for key, keep in keeps.items():
            # R² on the held-out masks that are not training masks (differs from r2 only for small n)
            pred = row.get(key, {}).pop("pred", None)
            if pred is not None and keep.sum() >= 2:
                row[key]["r2_unseen"] = spex.engine.heldout.r2(y_holdout[keep], pred[keep])
        row.get("shapiq_own", {}).pop("pred", None)
        runs.append(row)
        print_e2e_row(model_name, label, n, row, flush=True)
    return {"model": model_name, "subject": label, "text": vf.prompt, "n": n, "target": str(vf.target),
            "full_value": float(vf.full_value), "holdout": args.holdout, "holdout_seconds": holdout_s,
            "holdout_std": float(np.std(y_holdout)), "model_calls": engine.total.computed - start_calls,
            "seconds": now() - start_s, "runs": runs, "fingerprint": vf.fingerprint}


def fmt(v: Any, f: str = "%.3f") -> str:
    return (f % v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else "–"


def print_e2e_row(model: str, label: str, n: int, row: dict[str, Any], flush: bool = False) -> None:
    p, l_, s, o = row["proxyspex"], row["linear"], row.get("shapiq_same", {}), row.get("shapiq_own", {})
    pp = row.get("proxyspex_paired", {})
    print(f"  {model.split(':')[-1]:<22} {label[:34]:<34} n={n:<3} a={row['alpha']:<3g} B={row['budget']:<5} "
          f"ProxySPEX R²={fmt(p['r2'])} ({fmt(p['seconds'], '%.2f')}s)  paired R²={fmt(pp.get('r2'))} "
          f"(+{pp.get('new_calls', '–')} calls)  linear R²={fmt(l_['r2'])}  "
          f"shapiq same R²={fmt(s.get('r2'))} ({fmt(s.get('seconds'), '%.1f')}s)  "
          f"shapiq own R²={fmt(o.get('r2'))} (+{o.get('new_calls', '–')} calls)  "
          f"new calls ours={p['new_calls'] + l_['new_calls']}", flush=flush)


def part_e2e(smollm: Any, minilm: Any, args: argparse.Namespace, store_root: str) -> list[dict[str, Any]]:
    engine = AblationEngine(AblationStore(store_root), token_budget=args.token_budget, max_batch=args.max_batch,
                            progress=False)
    subjects = []
    for i in args.llm_prompts:
        prompt = E2E_PROMPTS[i - 1]
        vf = spex.lenses.features(smollm, prompt, max_new_tokens=args.e2e_new_tokens)
        subjects.append(e2e_subject(SMOLLM2, f"prompt {i}: {prompt[:28]}…", vf, engine, args, args.alphas,
                                    args.shapiq_own_llm_alphas, args.paired_llm_alphas))
    for i, sentence in enumerate(load_prompts("sentiment")[: args.sentiment_subjects]):
        vf = spex.lenses.features(minilm, sentence)
        subjects.append(e2e_subject(MINILM_SENTIMENT, sentence, vf, engine, args, args.alphas,
                                    args.shapiq_own_minilm_alphas, args.paired_minilm_alphas))
    return subjects


# ============================================================================================ tables
def throughput_markdown(result: dict[str, Any]) -> str:
    lines = ["| part | model | subject | n | masks | ours | ours masks/s | baseline | baseline masks/s | speedup | max abs diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    f = result.get("features")
    if f:
        eng = f["rows"][0]
        for r in f["rows"][1:]:
            lines.append(f"| features | SmolLM2-135M | {f['words']}-word prompt, {f['target_tokens']}-token target | {f['n']} | "
                         f"{r['masks']} | engine | {eng['masks_per_s']:.2f} | {r['side']} | {r['masks_per_s']:.2f} | "
                         f"{r['speedup_of_engine']:.2f}x | {r['max_abs_diff']:.1e} |")
    for h in result.get("heads", []):
        lines.append(f"| heads | {h['case'].split()[0]} | {h['case'].split(' ', 1)[1]} ({h['prompts']} prompts) | {h['n']} | "
                     f"{h['masks']} | {h['batch']} masks/forward | {h['ours_masks_per_s']:.2f} | 1 mask/forward | "
                     f"{h['single_masks_per_s']:.2f} | {h['speedup']:.2f}x | {h['max_abs_diff']:.1e} |")
    d = result.get("data")
    if d:
        lines.append(f"| data | MiniLM-L6 embeddings | sentiment train set, 1 test target | {d['n_train']} | {d['masks']} | "
                     f"batched LogisticTrainer | {d['ours']['retrainings_per_s']:.1f} | sklearn loop | "
                     f"{d['sklearn']['retrainings_per_s']:.1f} | {d['speedup']:.1f}x | {d['max_abs_diff']:.1e} |")
        big = d["ours_large"]
        lines.append(f"| data | MiniLM-L6 embeddings | same, larger batch (sklearn rate per fit as above) | {d['n_train']} | "
                     f"{big['masks']} | batched LogisticTrainer | {big['retrainings_per_s']:.1f} | sklearn loop | "
                     f"{d['sklearn']['retrainings_per_s']:.1f} | {d['speedup_large']:.1f}x | – |")
    return "\n".join(lines)


def e2e_markdown(subjects: list[dict[str, Any]]) -> str:
    lines = ["| model | subject | n | α | budget | ProxySPEX R² | linear R² | shapiq same-masks R² | ProxySPEX paired R² "
             "(new calls) | shapiq own-masks R² (new calls) | ProxySPEX s | shapiq same s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in subjects:
        for r in s["runs"]:
            sm, so, pp = r.get("shapiq_same", {}), r.get("shapiq_own"), r.get("proxyspex_paired")
            own = f"{fmt(so.get('r2'))} (+{so.get('new_calls')})" if so else "–"
            paired = f"{fmt(pp.get('r2'))} (+{pp.get('new_calls')})" if pp else "–"
            lines.append(f"| {s['model'].split(':')[-1]} | {s['subject'][:40]} | {s['n']} | {r['alpha']:g} | {r['budget']} | "
                         f"{fmt(r['proxyspex']['r2'])} | {fmt(r['linear']['r2'])} | {fmt(sm.get('r2'))} | {paired} | {own} | "
                         f"{fmt(r['proxyspex']['seconds'], '%.2f')} | {fmt(sm.get('seconds'), '%.2f')} |")
    return "\n".join(lines)


def e2e_summary(subjects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean R² per (model, alpha, method) over subjects."""
    out = []
    for model in sorted({s["model"] for s in subjects}):
        group = [s for s in subjects if s["model"] == model]
        for alpha in sorted({r["alpha"] for s in group for r in s["runs"]}):
            runs = [r for s in group for r in s["runs"] if r["alpha"] == alpha]
            row: dict[str, Any] = {"model": model, "alpha": alpha, "subjects": len(runs)}
            for key in ("proxyspex", "linear", "shapiq_same", "proxyspex_paired", "shapiq_own"):
                vals = [r[key]["r2"] for r in runs if key in r and "r2" in r[key]]
                if vals:
                    row[key] = {"mean_r2": float(np.mean(vals)), "min_r2": float(np.min(vals)), "count": len(vals)}
            wins = [r["proxyspex"]["r2"] > r["shapiq_same"]["r2"] for r in runs if "r2" in r.get("shapiq_same", {})]
            row["proxyspex_beats_shapiq_same"] = f"{sum(wins)}/{len(wins)}"
            row["proxyspex_beats_linear"] = f"{sum(r['proxyspex']['r2'] > r['linear']['r2'] for r in runs)}/{len(runs)}"
            out.append(row)
    return out


def summary_markdown(summary: list[dict[str, Any]]) -> str:
    lines = ["| model | α | subjects | ProxySPEX mean R² (min) | linear mean R² (min) | shapiq same-masks mean R² (min) | "
             "ProxySPEX paired mean R² (min) | shapiq own-masks mean R² (min) | ProxySPEX > shapiq same | ProxySPEX > linear |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary:
        cell = lambda k: f"{r[k]['mean_r2']:.3f} ({r[k]['min_r2']:.3f})" if k in r else "–"  # noqa: E731
        lines.append(f"| {r['model'].split(':')[-1]} | {r['alpha']:g} | {r['subjects']} | {cell('proxyspex')} | "
                     f"{cell('linear')} | {cell('shapiq_same')} | {cell('proxyspex_paired')} | {cell('shapiq_own')} | "
                     f"{r['proxyspex_beats_shapiq_same']} | {r['proxyspex_beats_linear']} |")
    return "\n".join(lines)


# ============================================================================================ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="~3-minute smoke variant")
    parser.add_argument("--parts", nargs="+", default=["features", "heads", "data", "e2e"],
                        choices=["features", "heads", "data", "e2e"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both sides of every comparison)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-batch", type=int, default=16, help="engine: most masks per forward")
    parser.add_argument("--token-budget", type=float, default=2048, help="engine: most padded tokens per forward")
    parser.add_argument("--feature-masks", type=int, default=160,
                        help="features lens masks (enough that length-sorted batches pad little, as in an audit)")
    parser.add_argument("--captum-masks", type=int, default=48,
                        help="masks for Captum's token-by-token default path: the first of the same masks (it is slow)")
    parser.add_argument("--rounds", type=int, default=3, help="part 1: interleaved rounds (engine, naive, Captum)")
    parser.add_argument("--peak-rows", type=int, default=16)
    parser.add_argument("--head-masks", type=int, default=32)
    parser.add_argument("--head-batch", type=int, default=16)
    parser.add_argument("--data-masks", type=int, default=256)
    parser.add_argument("--data-big", type=int, default=4096, help="masks of the large batched data-lens run")
    parser.add_argument("--data-batch", type=int, default=4096)
    parser.add_argument("--alphas", type=float, nargs="+", default=[2, 4, 8])
    parser.add_argument("--holdout", type=int, default=200, help="held-out uniform masks per subject")
    parser.add_argument("--llm-prompts", type=int, nargs="*", default=[1, 2, 3], choices=[1, 2, 3],
                        help="which of the three SmolLM2 end-to-end prompts to run")
    parser.add_argument("--sentiment-subjects", type=int, default=5)
    parser.add_argument("--e2e-new-tokens", type=int, default=12, help="SmolLM2 reference answer length (greedy)")
    parser.add_argument("--paired-llm-alphas", type=float, nargs="*", default=[2],
                        help="alphas at which our ProxySPEX also runs with its default antithetic pairs on SmolLM2 "
                             "(the main column runs without, on exactly linear's and shapiq-same's masks)")
    parser.add_argument("--paired-minilm-alphas", type=float, nargs="*", default=None,
                        help="the same on MiniLM (default: all alphas)")
    parser.add_argument("--shapiq-own-llm-alphas", type=float, nargs="*", default=[2],
                        help="alphas at which shapiq samples its own masks on SmolLM2 (new model calls)")
    parser.add_argument("--shapiq-own-minilm-alphas", type=float, nargs="*", default=None,
                        help="alphas at which shapiq samples its own masks on MiniLM (default: all)")
    parser.add_argument("--no-shapiq", action="store_true")
    parser.add_argument("--store", default=None, help="ablation store of the end-to-end part (default: a temp dir)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.quick:
        args.feature_masks, args.captum_masks, args.peak_rows = 16, 3, 8
        args.head_masks, args.data_masks, args.data_big, args.rounds = 8, 64, 1024, 2
        args.shapiq_own_llm_alphas, args.paired_llm_alphas = [], []
        args.alphas, args.llm_prompts, args.sentiment_subjects, args.holdout = [2, 4], [3], 2, 100
    if args.shapiq_own_minilm_alphas is None:
        args.shapiq_own_minilm_alphas = list(args.alphas)
    if args.paired_minilm_alphas is None:
        args.paired_minilm_alphas = list(args.alphas)
    # the quick smoke run never overwrites the committed results
    args.out = args.out or (str(Path(tempfile.gettempdir()) / "spex-ablation-quick.json") if args.quick
                            else str(RESULTS / "ablation.json"))

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    load_at_start = os.getloadavg()
    limits = threadpool_limits(args.threads)  # BLAS/OpenMP (sklearn, numpy) like torch: same for every side
    started = now()
    timings: dict[str, float] = {}
    result: dict[str, Any] = {}

    t0 = now()
    smollm = spex.models.load(SMOLLM2)
    minilm = spex.models.load(MINILM_SENTIMENT)
    timings["load_models"] = now() - t0
    print(f"models loaded in {timings['load_models']:.1f}s; torch threads {torch.get_num_threads()}", flush=True)

    if "features" in args.parts:
        t0 = now()
        f = result["features"] = part_features(smollm, args)
        timings["features"] = now() - t0
        print(f"\n== 1. features lens, SmolLM2, {f['words']}-word prompt (n={f['n']}), target {f['target_tokens']} tokens, "
              f"{f['mean_tokens_per_mask']:.0f} tokens/mask ({timings['features']:.0f}s)")
        print(f"  {'side':<15} {'masks':>5} {'seconds':>8} {'masks/s':>8} {'tokens/s':>9} {'engine x':>9} {'max|Δ|':>9}")
        for r in f["rows"]:
            print(f"  {r['side']:<15} {r['masks']:>5} {r['seconds']:>8.2f} {r['masks_per_s']:>8.2f} {r['tokens_per_s']:>9.0f} "
                  f"{r['speedup_of_engine']:>8.2f}x {r['max_abs_diff']:>9.1e}")
        pk = f["model_peak"]
        print(f"  model's own forward: {pk['tokens_per_s']:.0f} tokens/s at {pk['rows']} x {pk['length']} random tokens, "
              f"{f['model_single_row']['tokens_per_s']:.0f} tokens/s at 1 x {pk['length']}; engine at "
              f"{f['engine_fraction_of_peak']:.2f} of the batched figure (engine tokens include the cached prefix)", flush=True)

    if "heads" in args.parts:
        t0 = now()
        result["heads"] = part_heads(smollm, minilm, args)
        timings["heads"] = now() - t0
        print(f"\n== 2. heads lens: B masks per forward vs one per forward ({timings['heads']:.0f}s)")
        for h in result["heads"]:
            print(f"  {h['case']:<18} n={h['n']:<4} {h['prompts']} prompts, {h['masks']} masks: {h['batch']}/forward "
                  f"{h['ours_masks_per_s']:.2f} masks/s vs 1/forward {h['single_masks_per_s']:.2f} masks/s = "
                  f"{h['speedup']:.2f}x; max|Δ| {h['max_abs_diff']:.1e} (values span {h['value_range']:.2f})", flush=True)

    if "data" in args.parts:
        t0 = now()
        d = result["data"] = part_data(args)
        timings["data"] = now() - t0
        print(f"\n== 3. data lens: {d['n_train']} training sentences, MiniLM-L6 embeddings ({timings['data']:.0f}s)")
        print(f"  batched LogisticTrainer {d['ours']['retrainings_per_s']:.1f} retrainings/s ({d['masks']} masks; "
              f"{d['ours_large']['retrainings_per_s']:.1f}/s on {d['ours_large']['masks']}) vs sklearn loop "
              f"{d['sklearn']['retrainings_per_s']:.1f}/s = {d['speedup']:.1f}x; max|Δ| {d['max_abs_diff']:.1e} "
              f"({d['max_abs_diff_over_std']:.1e} of the values' std), Pearson {d['pearson']:.6f}", flush=True)

    if "e2e" in args.parts:
        t0 = now()
        print(f"\n== 4. end to end: held-out R² ({args.holdout} uniform masks per subject), alphas {args.alphas}", flush=True)
        if args.store:
            result["e2e"] = part_e2e(smollm, minilm, args, args.store)
        else:
            with tempfile.TemporaryDirectory(prefix="spex-bench-store-") as tmp:
                result["e2e"] = part_e2e(smollm, minilm, args, tmp)
        timings["e2e"] = now() - t0
        result["e2e_summary"] = e2e_summary(result["e2e"])
        print(f"  ({timings['e2e']:.0f}s; model calls per subject: "
              + ", ".join(f"{s['model_calls']}" for s in result["e2e"]) + ")")

    timings["total"] = now() - started
    print("\n" + throughput_markdown(result))
    if result.get("e2e"):
        print("\n" + e2e_markdown(result["e2e"]))
        print("\n" + summary_markdown(result["e2e_summary"]))
    from importlib.metadata import version

    meta = {
        "machine": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg(), "python": platform.python_version(),
        "torch": torch.__version__, "transformers": version("transformers"), "shapiq": version("shapiq"),
        "lightgbm": version("lightgbm"), "scikit-learn": version("scikit-learn"),
        "torch_threads": torch.get_num_threads(), "blas_openmp_threads": args.threads, "math_threads": 1, "device": str(smollm.device),
        "date": time.strftime("%Y-%m-%d %H:%M"), "args": vars(args),
        "models": {SMOLLM2: smollm.describe(), MINILM_SENTIMENT: minilm.describe()},
        "n_per_subject": {s["subject"]: s["n"] for s in result.get("e2e", [])},
        "holdout_per_subject": args.holdout, "timings_s": timings,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, **result}, indent=1, default=float))
    print(f"\ntotal {timings['total']:.0f}s; wrote {out}")
    limits.restore_original_limits()


if __name__ == "__main__":
    main()
