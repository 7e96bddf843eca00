"""Scale-out benchmark (issue 6): the ablation stage of an audit on the single-process runner vs the Ray
runner with 1 and 2 workers, side by side in one run: same model, same subjects, same masks. Prints a
table and writes JSON to benchmarks/results/scaleout.json.

    python benchmarks/scaleout.py            # the default run (~8-10 minutes on 2 busy CPU cores)
    python benchmarks/scaleout.py --quick    # a 1-2-minute smoke variant, written to $TMPDIR, never over the results

What runs: the features lens of ``builtin:minilm-sentiment`` (MiniLM-L6 sentiment classifier; a mask
removes words, the value is the class logit) on the longest prompts of the bundled sentiment set, the
same uniform random masks per prompt (seeded), through the code the audit flow runs:

* ``local``: ``tasks.runners.LocalChunks`` — one ``ablate`` task run per chunk, one after the other, in this
  process (the default runner);
* ``ray xW``: ``tasks.runners.RayChunks`` on an in-process Ray cluster with W CPUs — every chunk of every
  subject submitted at once as a Ray task (``num_cpus=1``, 1 torch thread), at most W at a time.

Each configuration runs on a fresh, empty ablation store every time: once **cold** (the first run: Ray
starts its worker processes, each imports torch/transformers/prefect and loads the model once), then
``--repeats`` (3) times **warm** (the same masks into another empty store: the workers and their loaded
model are reused; the steady state of a long audit); the median warm run is reported, all are in the JSON
(the machine is shared: single runs swing with the other jobs' load). Every run is checked: every distinct mask computed exactly once (engine counters
returned by the tasks == distinct masks == rows in the store's chunk files) and the same values as the
local run. Torch runs 1 thread per worker (and 1 in this process for ``local``).

A second part measures the storage at n = 200 for the capacity plan in docs/scale-out.md:
alpha*n*log2(n) masks (+200 held out) written to the ablation store in 512-mask chunks, and the same sets
as the Parquet artifacts an audit logs to MLflow; bytes per mask.

Prefect runs on its ephemeral API (what ``spex audit`` uses without a server): the workers reach the
driver's temporary API server. No GPU is used or needed (none is lent to this benchmark's machine).
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

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"


def _prompts(count: int, sentences: int) -> list[str]:
    """``count`` prompts, each ``sentences`` texts of the bundled sentiment set joined (longest first, deterministic):
    ~40 words at 4 sentences, so a forward costs what a paragraph-sized subject costs."""
    from importlib import resources

    rows = [json.loads(line) for line in resources.files("spex.data").joinpath("sentiment.jsonl").read_text().splitlines()
            if line.strip()]
    texts = sorted({r["text"] for r in rows}, key=lambda t: (-len(t.split()), t))
    return [" ".join(texts[i * sentences:(i + 1) * sentences]) for i in range(count)]


def _spec(prompts: list[str], chunk: int, max_batch: int) -> dict[str, Any]:
    return {"model": "builtin:minilm-sentiment", "lens": "features",
            "subjects": [{"id": f"p{i}", "prompt": p} for i, p in enumerate(prompts)],
            "batch": {"max_batch": max_batch, "chunk_size": chunk}}


def _chunk_rows(store: Any, fingerprint: str) -> int:
    from spex.ablation.store import CHUNK_SUFFIX, _decode_chunk

    return sum(len(_decode_chunk(p.read_bytes())[1]) for p in store.path(fingerprint).glob(f"*{CHUNK_SUFFIX}"))


def _stage(spec: dict[str, Any], infos: list[dict[str, Any]], masks: dict[str, np.ndarray], store_root: str,
           runner: str, chunk: int) -> dict[str, Any]:
    """The ablation stage under a Prefect flow run, as the audit flow runs it; returns values and counters."""
    from prefect import flow

    from tasks.runners import open_runner

    @flow(name="spex-scaleout-benchmark", log_prints=False)
    def stage() -> dict[str, Any]:
        start = time.perf_counter()
        with open_runner(runner) as chunks:
            pending = [chunks.submit(spec, info["id"], info["fingerprint"], masks[info["id"]], store_root, "train", chunk)
                       for info in infos]
            out = [p.gather() for p in pending]  # local: computed here, chunk after chunk; Ray: concurrently
            workers = chunks.worker_summary() if chunks.concurrent else None
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "values": {i["id"]: v for i, (v, _) in zip(infos, out)},
                "computed": sum(s["computed"] for _, s in out), "chunks": sum(s["chunks"] for _, s in out),
                "workers": workers}

    return stage()


def _check(result: dict[str, Any], infos: list[dict[str, Any]], masks: dict[str, np.ndarray], store_root: str) -> dict[str, Any]:
    """Exactly once: computed == distinct masks == rows written to the store."""
    from spex.ablation import AblationStore
    from spex.engine.maskbits import unique_rows

    store = AblationStore(store_root)
    distinct = sum(len(unique_rows(masks[i["id"]])[0]) for i in infos)
    rows = sum(_chunk_rows(store, i["fingerprint"]) for i in infos)
    stored = sum(store.count(i["fingerprint"]) for i in infos)
    ok = result["computed"] == distinct == rows == stored
    if result["workers"] is not None:
        ok = ok and result["workers"]["computed"] == distinct
    return {"distinct": distinct, "computed": result["computed"], "store_rows": rows, "exactly_once": bool(ok)}


def measure_runners(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    import torch

    from spex.ablation import AblationEngine, AblationStore
    from spex.audit import runtime
    from spex.engine.sampling import rng, uniform

    torch.set_num_threads(1)
    spec = _spec(_prompts(args.subjects, args.sentences), args.chunk, args.max_batch)
    audit_spec = runtime.spec_from(spec)
    infos, masks, tokens = [], {}, 0.0
    t0 = time.perf_counter()
    for k, s in enumerate(audit_spec.subjects):
        vf = runtime.value_function(audit_spec, s.id)
        infos.append({"id": s.id, "fingerprint": vf.fingerprint, "n": int(vf.n_features)})
        masks[s.id] = uniform(vf.n_features, args.masks, rng(args.seed + k, "scaleout"))
        tokens += float(AblationEngine(AblationStore(tempfile.mkdtemp())).bind(vf).cost(masks[s.id]).sum())
    load_seconds = time.perf_counter() - t0
    total = sum(len(m) for m in masks.values())
    print(f"{len(infos)} subjects, n = {[i['n'] for i in infos]}, {args.masks} masks each ({total} in all, "
          f"{tokens / total:.1f} tokens per mask), chunks of {args.chunk}, batches of {args.max_batch}; "
          f"model loaded in this process in {load_seconds:.1f} s", flush=True)

    configs: list[tuple[str, str, int]] = [("local", "local", 1)] + [(f"ray x{w}", "ray", w) for w in args.workers]
    rows, reference = [], None
    work = Path(tempfile.mkdtemp(prefix="spex-scaleout-"))
    for name, runner, workers in configs:
        if runner == "ray":
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        try:
            runs = {}
            for phase in ["cold"] + [f"warm{k}" for k in range(1, args.repeats + 1)]:
                root = str(work / f"{name.replace(' ', '')}-{phase}")
                load_avg = os.getloadavg()[0]
                result = _stage(spec, infos, masks, root, runner, args.chunk)
                check = _check(result, infos, masks, root)
                if reference is None:
                    reference = result["values"]
                diff = max(float(np.abs(result["values"][i["id"]] - reference[i["id"]]).max()) for i in infos)
                runs[phase] = {"seconds": result["seconds"], "masks_per_s": total / result["seconds"],
                               "tokens_per_s": tokens / result["seconds"], "chunks": result["chunks"],
                               "max_abs_diff_vs_local": diff, "load_avg_1min_before": load_avg, **check,
                               "worker_processes": (result["workers"] or {}).get("processes"),
                               "max_model_loads_per_process": (result["workers"] or {}).get("max_model_loads_per_process")}
                print(f"  {name:8s} {phase}: {result['seconds']:7.1f} s  {total / result['seconds']:8.1f} masks/s  "
                      f"exactly once: {check['exactly_once']}  max |diff| vs local {diff:.2g}  "
                      f"(load avg {load_avg:.1f})", flush=True)
            warm = sorted((r for p, r in runs.items() if p.startswith("warm")), key=lambda r: r["seconds"])
            runs["warm"] = {**warm[len(warm) // 2], "repeats_seconds": [r["seconds"] for r in warm]}  # the median run
            rows.append({"config": name, "runner": runner, "workers": workers, **{p: r for p, r in runs.items()}})
        finally:
            if runner == "ray":
                ray.shutdown()
    base = next(r for r in rows if r["runner"] == "local")
    for r in rows:
        for phase in ("cold", "warm"):
            r[phase]["speedup_vs_local"] = base[phase]["seconds"] / r[phase]["seconds"]
    return {"model": "builtin:minilm-sentiment", "lens": "features", "subjects": len(infos),
            "n": [i["n"] for i in infos], "masks_per_subject": args.masks, "masks": total,
            "tokens_per_mask": tokens / total, "chunk_size": args.chunk, "max_batch": args.max_batch,
            "torch_threads_per_worker": 1, "rows": rows}


def measure_storage(n: int, alphas: list[int], holdout: int, chunk: int) -> list[dict[str, Any]]:
    """Bytes on disk of one subject's ablations at n features (values are random normals): the ablation
    store (chunk files + meta.json), and the train + held-out Parquet artifacts an audit logs to MLflow
    (written exactly as ``spex.records.tracking`` writes them: its frame layout, zstd)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spex.ablation import AblationStore
    from spex.engine.sampling import rng, uniform
    from spex.records.tracking import ablation_frame

    out = []
    for alpha in alphas:
        budget = math.ceil(alpha * n * math.log2(n))
        count = budget + holdout
        with tempfile.TemporaryDirectory() as root:
            store = AblationStore(root)
            fp = f"storage-{n}-{alpha}"
            store.register(fp, n, [f"word{i}" for i in range(n)])
            x = uniform(n, count, rng(alpha, "storage"))
            values = np.random.default_rng(alpha).normal(size=count)
            for lo in range(0, count, chunk):
                store.append(fp, x[lo:lo + chunk], values[lo:lo + chunk])
            distinct = store.count(fp)
            size = store.size_bytes(fp)
            parquet = 0
            for part in (slice(0, budget), slice(budget, count)):
                frame, _ = ablation_frame(x[part], values[part])
                path = Path(root) / "artifact.parquet"
                pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, compression="zstd")
                parquet += path.stat().st_size
        out.append({"n": n, "alpha": alpha, "masks": count, "distinct": distinct, "bytes": size,
                    "bytes_per_mask": size / distinct, "mlflow_parquet_bytes": parquet,
                    "mlflow_parquet_bytes_per_mask": parquet / count})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke variant (fewer masks), written to $TMPDIR")
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--sentences", type=int, default=4, help="sentences per prompt (n ~ 10 words each)")
    parser.add_argument("--masks", type=int, default=512, help="masks per subject")
    parser.add_argument("--chunk", type=int, default=128, help="chunk size (masks per task)")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="warm runs per runner (the median is reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.masks, args.subjects, args.sentences, args.repeats = 128, 2, 2, 1
    out = args.out or (Path(tempfile.gettempdir()) / "spex-scaleout-quick.json" if args.quick
                       else RESULTS / "scaleout.json")
    started = time.time()
    runners = measure_runners(args)
    storage = measure_storage(200, [2, 4, 8], 200, 512)

    print()
    print(f"Ablation stage, {runners['model']} features lens, {runners['masks']} masks "
          f"({runners['subjects']} prompts x {runners['masks_per_subject']}, n = {runners['n']}, "
          f"{runners['tokens_per_mask']:.1f} tokens/mask), chunks of {runners['chunk_size']}, 1 torch thread per worker")
    header = ("| runner | cold s | cold masks/s | warm s | warm masks/s | warm tokens/s | speedup (warm) | "
              "speedup (cold) | exactly once | max abs diff vs local |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for r in runners["rows"]:
        c, w = r["cold"], r["warm"]
        print(f"| {r['config']} | {c['seconds']:.1f} | {c['masks_per_s']:.1f} | {w['seconds']:.1f} | "
              f"{w['masks_per_s']:.1f} | {w['tokens_per_s']:.0f} | {w['speedup_vs_local']:.2f}x | "
              f"{c['speedup_vs_local']:.2f}x | {c['exactly_once'] and w['exactly_once']} | "
              f"{max(c['max_abs_diff_vs_local'], w['max_abs_diff_vs_local']):.2g} |")
    print()
    print("Ablation store on disk, one subject at n = 200 (alpha*n*log2 n masks + 200 held out, 512-mask chunks)")
    print("| alpha | masks | store bytes | store bytes/mask | MLflow Parquet bytes | Parquet bytes/mask |")
    print("|---|---|---|---|---|---|")
    for s in storage:
        print(f"| {s['alpha']} | {s['distinct']} | {s['bytes']:,} | {s['bytes_per_mask']:.1f} | "
              f"{s['mlflow_parquet_bytes']:,} | {s['mlflow_parquet_bytes_per_mask']:.1f} |")

    import ray

    payload = {"benchmark": "scaleout", "quick": args.quick, "runners": runners, "storage": storage,
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                           "gpu": None, "note": "shared 2-core machine, other jobs running; no GPU lent to this task"},
               "versions": {"ray": ray.__version__, "prefect": __import__("prefect").__version__,
                            "torch": __import__("torch").__version__},
               "seconds": time.time() - started}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
