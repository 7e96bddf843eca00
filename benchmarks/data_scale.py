"""The data lens at 1,000+ training examples through the audit flow (issue 14): seconds and peak memory
per stage, and the batch the lens prefers against the engine's old default of 64 masks.

Each audit runs as ``spex audit`` runs it (``flows.audit.audit``: Prefect on its ephemeral API, the
local runner, SQLite metadata DB and MLflow file store in a fresh data dir, so every mask is computed),
``budget: auto`` (⌈α·n·log2 n⌉ masks, α = 4) with ProxySPEX, the audited model
``builtin:minilm-sentiment`` as the encoder (``encoder: model``: 384-dimensional mean-pooled embeddings),
given as its trained folder (``spex.models.builtins.sentiment_folder()``, trained once in the outer data
dir) so that no audit's fresh data dir trains it again.

Training set: n distinct texts, each two bundled sentences of the same sentiment joined (the 300
sentences of ``spex/data/sentiment.jsonl`` give 2 x 150 x 149 ordered same-label pairs; a seeded
sample of n of them, half positive), labelled with that sentiment; the target is a sentence of neither.

Parts:

* ``scale`` — one audit per ``--ns`` (default 1,000 and 2,000): per-stage seconds and peak RSS from the
  outcome (``stats.seconds``, ``stats.peak_rss_mib``: :class:`spex.audit.metering.StageMeter`), the
  rest of the audit's wall time (prepare: model load, embedding, value function; opening, gates,
  report, publish) as ``other``, and the process's peak RSS over the whole audit (sampled every 50 ms).
* ``batch`` — the same subject's ablate stage under the old default (``batch: {max_batch: 64,
  chunk_size: 512}``) and under the lens's default (no ``batch`` section: ``max_batch`` 1,024, the
  lens's ``preferred_batch`` under it, chunks that hold a batch), on the same masks (``method: linear``,
  ``--batch-budget`` masks, so the fit costs nothing), interleaved over ``--rounds`` rounds, each into
  an empty store; the ratio of their ablate seconds.

    python benchmarks/data_scale.py                       # n = 1,000 and 2,000, then the batch part
    python benchmarks/data_scale.py --ns 1000 --parts scale
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")  # a busy machine starts it slowly
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "builtin:minilm-sentiment"
TARGET = {"id": "target", "text": "I expected to hate the film, but it was not bad at all.", "label": "positive"}
STAGES = ("sample", "ablate", "fit", "search", "validate", "record")


def training_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """n distinct same-label pairs of bundled sentences (half positive, half negative), seeded."""
    from spex.data import load_sentiment

    by_label: dict[str, list[str]] = {}
    for row in load_sentiment():
        by_label.setdefault(row["label"], []).append(row["text"])
    rng = np.random.default_rng(seed)
    rows, seen = [], set()
    for k in range(n):
        label = ("positive", "negative")[k % 2]
        texts = by_label[label]
        while True:
            i, j = rng.choice(len(texts), size=2, replace=False)
            if (label, i, j) not in seen:
                seen.add((label, i, j))
                break
        rows.append({"text": f"{texts[i]} {texts[j]}", "label": label})
    return rows


class PeakSampler:
    """The process's largest resident set size while it runs (VmRSS every ``period`` seconds), in MiB:
    the audit's peak including what no stage meter sees (model load, embedding, report)."""

    def __init__(self, period: float = 0.05) -> None:
        from spex.audit.metering import current_rss_mib

        self.read, self.period, self.peak = current_rss_mib, period, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read() or 0.0)
            self._stop.wait(self.period)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.read() or 0.0)


def run_audit(spec: dict[str, Any], root: Path) -> dict[str, Any]:
    """One audit through the flow in a fresh data dir; its outcome's per-stage numbers."""
    from flows.audit import audit
    from spex.settings import scoped_environ

    root.mkdir(parents=True, exist_ok=True)
    with scoped_environ({"SPEX_DATA_DIR": str(root), "MLFLOW_TRACKING_URI": None, "SPEX_DATABASE_URL": None}):
        t0 = time.perf_counter()
        with PeakSampler() as sampler:
            result = audit(spec, db_url=f"sqlite:///{root / 'meta.db'}")
        wall = time.perf_counter() - t0
    s = result.subjects["target"]
    seconds = {k: float(s.stats["seconds"].get(k, 0.0)) for k in STAGES}
    seconds["other"] = max(0.0, wall - sum(seconds.values()))
    return {"n": s.n, "budget": s.budget, "computed": int(s.stats["computed"]), "heldout_r2": s.heldout_r2,
            "seconds": seconds, "wall_seconds": wall, "audit_seconds": result.seconds,
            "compute_seconds": float(s.stats.get("compute_seconds", 0.0)),
            "peak_rss_mib": s.stats["peak_rss_mib"], "process_peak_rss_mib": round(sampler.peak, 1),
            "ablate_masks_per_s": s.stats["computed"] / seconds["ablate"] if seconds["ablate"] > 0 else None,
            "passed": result.passed}


def spec_for(train: Path, **extra: Any) -> dict[str, Any]:
    return {"model": str(MODEL_FOLDER), "lens": "data", "lens_options": {"train": str(train)}, "subjects": [TARGET],
            "budget": "auto", "seed": 0, **extra}


def part_scale(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    out = []
    for n in args.ns:
        train = work / f"train-{n}.jsonl"
        train.write_text("".join(json.dumps(r) + "\n" for r in training_rows(n)))
        print(f"\n== scale: n = {n}, budget auto (alpha 4), ProxySPEX, through the flow", flush=True)
        row = run_audit(spec_for(train), work / f"scale-{n}")
        row["load_average"] = os.getloadavg()
        out.append(row)
        print(table_scale([row]), flush=True)
        save(args, {"scale": out})
    return out


def part_batch(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    n = args.batch_n
    train = work / f"train-{n}.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in training_rows(n)))
    configs = {"old default (max_batch 64, chunk 512)": {"batch": {"max_batch": 64, "chunk_size": 512}},
               "lens default (preferred batch)": {}}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in configs}
    for r in range(args.rounds):
        for name, extra in configs.items():
            spec = spec_for(train, method="linear", budget=args.batch_budget, holdout=8, removal_r=0, **extra)
            row = run_audit(spec, work / f"batch-{r}-{len(runs[name])}-{abs(hash(name)) % 1000}")
            row["load_average"] = os.getloadavg()
            runs[name].append(row)
            print(f"  round {r}: {name}: ablate {row['seconds']['ablate']:.1f}s "
                  f"({row['ablate_masks_per_s']:.0f} masks/s, {row['computed']} masks), load {row['load_average'][0]:.1f}",
                  flush=True)
    from spex.lenses.registrations.data import preferred_batch

    best = {k: min(r["seconds"]["ablate"] for r in v) for k, v in runs.items()}
    old, new = best
    return {"n": n, "masks": args.batch_budget, "preferred_batch": preferred_batch(n), "runs": runs,
            "best_ablate_seconds": best, "speedup": best[old] / best[new]}


def table_scale(rows: list[dict[str, Any]]) -> str:
    head = ("| n | budget | masks computed | " + " | ".join(f"{s} s" for s in (*STAGES, "other")) + " | total s | "
            "ablate masks/s | " + " | ".join(f"{s} peak MiB" for s in STAGES) + " | process peak MiB | held-out R² |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        sec, mem = r["seconds"], r["peak_rss_mib"]["stages"]
        lines.append(f"| {r['n']:,} | {r['budget']:,} | {r['computed']:,} | "
                     + " | ".join(f"{sec[s]:.1f}" for s in (*STAGES, "other")) + f" | {r['wall_seconds']:.1f} | "
                     f"{r['ablate_masks_per_s']:.0f} | " + " | ".join(f"{mem.get(s, 0):,.0f}" for s in STAGES)
                     + f" | {r['process_peak_rss_mib']:,.0f} | {r['heldout_r2']:.3f} |")
    return "\n".join(lines)


def table_batch(b: dict[str, Any]) -> str:
    lines = ["| batches | masks | ablate s (best of rounds) | masks/s | ablate s per round |", "|---|---|---|---|---|"]
    for name, runs in b["runs"].items():
        best = b["best_ablate_seconds"][name]
        lines.append(f"| {name} | {b['masks']:,} | {best:.1f} | {b['masks'] / best:.0f} | "
                     + ", ".join(f"{r['seconds']['ablate']:.1f}" for r in runs) + " |")
    lines.append(f"\npreferred batch at n = {b['n']:,}: {b['preferred_batch']}; old default / lens default = "
                 f"**{b['speedup']:.2f}x**")
    return "\n".join(lines)


def save(args: argparse.Namespace, result: dict[str, Any]) -> None:
    import torch
    from importlib.metadata import version

    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "prefect": version("prefect"), "torch_threads": torch.get_num_threads(),
            "load_average_at_start": LOAD_START, "load_average_now": os.getloadavg(), "args": vars(args),
            "date": time.strftime("%Y-%m-%d %H:%M")}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.is_file() and args.merge else {}
    path.write_text(json.dumps({**old, "meta": meta, **result}, indent=1, default=float))


LOAD_START = os.getloadavg()
MODEL_FOLDER: Path | None = None  # builtin:minilm-sentiment's trained folder (set in main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ns", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--parts", nargs="+", default=["scale", "batch"], choices=["scale", "batch"])
    parser.add_argument("--batch-n", type=int, default=1000)
    parser.add_argument("--batch-budget", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the retraining and the encoder)")
    parser.add_argument("--merge", action="store_true", help="keep the other parts already in --out")
    parser.add_argument("--out", default=str(RESULTS / "data_scale.json"))
    args = parser.parse_args()
    import torch

    from spex.settings import apply_offline_defaults

    apply_offline_defaults()
    torch.set_num_threads(args.threads)
    global MODEL_FOLDER
    from spex.models.builtins import sentiment_folder

    MODEL_FOLDER = sentiment_folder()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="spex-data-scale-") as tmp:
        work = Path(tmp)
        if "scale" in args.parts:
            result["scale"] = part_scale(args, work)
        if "batch" in args.parts:
            print(f"\n== batch: n = {args.batch_n}, {args.batch_budget} masks, old default vs lens default", flush=True)
            result["batch"] = part_batch(args, work)
            save(args, result)
    if result.get("scale"):
        print("\n" + table_scale(result["scale"]))
    if result.get("batch"):
        print("\n" + table_batch(result["batch"]))
    print(f"\nload average at start {LOAD_START}, at end {os.getloadavg()}; wrote {args.out}")


if __name__ == "__main__":
    main()
