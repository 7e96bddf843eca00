"""``make demo``: the main job end to end, offline, on the embedded defaults (SQLite metadata DB, local
MLflow store, Prefect's ephemeral API, everything under the data dir).

1. **features lens on SmolLM2-135M-Instruct** (``builtin:smollm2-135m-instruct``) for two bundled
   prompts (``spex/data/demo/smollm2-features.yaml``): which words, and which pairs of words, drive the
   model's answer; validated on held-out masks with real model calls; gated on faithfulness. Then the
   **context lens** on two bundled multi-passage questions (``smollm2-context.yaml``): which retrieved
   passages the answer rests on, and which only matter together (48 model calls: 4 and 5 passages).
2. **a release audit of two versions of the MiniLM sentiment classifier**: version 1 fine-tuned on the
   bundled sentences (seed 0), version 2 with another seed on the variant without negation sentences —
   both registered in the local MLflow registry as ``spex-demo-sentiment`` versions 1 and 2 (aliases
   ``champion`` and ``candidate``); audited with the heads lens and the data lens
   (``sentiment-heads.yaml``, ``sentiment-data.yaml``), diffed, gated, and version 2 tagged with the
   outcome.

It prints the ranked interactions, the gate tables, where the reports are, the command that opens
the MLflow UI and the pages to open in it (:func:`dashboard_links`): each audit's runs, a subject's
figures, the interaction-drift charts across versions 1 and 2, and version 2's registry page with its
verdict per spec (``docs/dashboards.md`` shows them). A second ``make demo`` reuses everything (trained
models, registry versions, ablations, Prefect task caches) and finishes in a fraction of the time.

Like the CLI, this is an application entry point: it imports the Prefect flows (``flows/``) lazily.
"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path
from typing import Any

REGISTERED_MODEL = "spex-demo-sentiment"
VERSIONS = ((0, "full"), (1, "no-negation"))  # (seed, training variant) of versions 1 and 2
ALIASES = {"1": "champion", "2": "candidate"}


def demo_spec(name: str) -> Path:
    """Path of a bundled demo spec (``spex/data/demo/<name>``)."""
    return Path(str(resources.files("spex.data").joinpath("demo", name)))


def register_sentiment_versions(tracking_uri: str | None = None, log: Any = print) -> list[str]:
    """Fine-tune the two sentiment versions (cached after the first time) and register them as
    versions of ``spex-demo-sentiment``; reuses versions already registered from the same weights.

    Returns the registered version numbers, in order; sets the aliases ``champion`` (the first) and
    ``candidate`` (the second).
    """
    from mlflow.exceptions import MlflowException

    from spex.models import folder_digest
    from spex.models.builtins import sentiment_folder, sentiment_report
    from spex.records.tracking import AuditTracker

    tracker = AuditTracker(tracking_uri)
    client = tracker.client
    try:
        client.get_registered_model(REGISTERED_MODEL)
    except MlflowException:
        client.create_registered_model(REGISTERED_MODEL, description="MiniLM sentiment classifier fine-tuned by the spex demo")
    existing = {mv.tags.get("spex.weights_digest"): mv.version
                for mv in client.search_model_versions(f"name='{REGISTERED_MODEL}'")}
    versions = []
    for seed, variant in VERSIONS:
        started = time.perf_counter()
        folder = sentiment_folder(seed=seed, variant=variant)  # trains on first use (~1-2 min on 2 cores)
        report = sentiment_report(folder)
        digest = folder_digest(folder)
        if digest in existing:
            version = existing[digest]
        else:
            experiment = tracker.experiment_id("demo-training")
            run = client.create_run(experiment, run_name=f"minilm-sentiment-{variant}-s{seed}",
                                    tags={"spex.demo": "training"}).info.run_id
            tracker.log_params(run, {"seed": seed, "variant": variant, "epochs": report.get("epochs"),
                                     "n_train": report.get("n_train")})
            tracker.log_metrics(run, {"heldout_accuracy": report.get("heldout_accuracy")})
            client.log_artifacts(run, str(folder), "model")
            client.set_terminated(run)
            mv = client.create_model_version(REGISTERED_MODEL, f"runs:/{run}/model", run_id=run,
                                             tags={"spex.weights_digest": digest, "seed": str(seed), "variant": variant},
                                             description=f"seed {seed}, training variant {variant}")
            version = mv.version
        versions.append(str(version))
        log(f"  version {version}: seed {seed}, variant {variant}, held-out accuracy "
            f"{report.get('heldout_accuracy', float('nan')):.3f} ({time.perf_counter() - started:.0f} s)")
    for version, alias in zip(versions, ("champion", "candidate")):
        client.set_registered_model_alias(REGISTERED_MODEL, alias, version)
    return versions


def dashboard_links(outcomes: list[tuple[str, Any]], *, model: str = REGISTERED_MODEL, version: str = "2",
                    tracking_uri: str | None = None) -> list[tuple[str, str]]:
    """(what, address) of the MLflow UI pages that show the demo's audits: the runs of each audited
    model's experiment, the figures of the last audit's first subject, each drift run's metric charts of
    ``model`` (one line per top interaction across versions), and ``model`` version ``version``'s
    registry page (its verdict table). ``outcomes``: (title, AuditOutcome), as the demo collects them."""
    from spex import settings
    from spex.records import tracking

    uri = tracking_uri or settings.mlflow_tracking_uri()
    base = tracking.ui_base(uri)
    tracker = tracking.AuditTracker(uri)
    links: list[tuple[str, str]] = []
    seen = set()
    for _, outcome in outcomes:
        if outcome.mlflow_experiment_id not in seen:
            seen.add(outcome.mlflow_experiment_id)
            links.append((f"runs of the audits of {outcome.model.name}",
                          tracking.experiment_url(base, outcome.mlflow_experiment_id)))
    if outcomes:
        title, last = outcomes[-1]
        children = sorted(tracker.child_runs(last.mlflow_run_id), key=lambda r: r.info.run_name or "")
        if children:
            child = children[0]
            links.append((f"figures of subject {child.data.tags.get(tracking.TAG_SUBJECT, '?')} ({title})",
                          tracking.run_url(base, last.mlflow_experiment_id, child.info.run_id,
                                           "artifacts/figures/interactions.png")))
    for drift in tracker.drift_runs(model):
        links.append((f"interaction drift across versions: {drift.name}",
                      tracking.metric_charts_url(base, drift.experiment_id, drift.run_id)))
    links.append((f"registry: {model} version {version}, its verdict per spec", tracking.model_version_url(base, model, version)))
    return links


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns 0 when every part ran (gates may pass or fail: that is the audit's answer)."""
    parser = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-llm", action="store_true", help="skip part 1 (the SmolLM2 features and context audits)")
    args = parser.parse_args(argv)

    from flows import cli
    from spex import settings

    cli._quiet_libraries()
    console = cli._console()
    start = time.perf_counter()
    say = lambda text="": console.print(text, markup=False, highlight=False)  # noqa: E731
    say(f"spex demo · data dir {settings.data_dir()}")
    say(f"  metadata DB {settings.database_url()} · MLflow {settings.mlflow_tracking_uri()} · Prefect: ephemeral API")
    from flows.audit import audit
    from flows.release import release_audit
    from spex.audit.pipeline import AuditOutcome
    from spex.audit.spec import load_spec
    from tasks.caching import results_in_data_dir

    outcomes: list[tuple[str, AuditOutcome]] = []
    if not args.skip_llm:
        for heading, name, top, title in (
            ("1. features lens: which words drive SmolLM2-135M-Instruct's answers", "smollm2-features.yaml", 8,
             "features · smollm2"),
            ("1b. context lens: which retrieved passages SmolLM2's answers rest on, and which only together",
             "smollm2-context.yaml", 6, "context · smollm2"),
        ):
            say(f"\n== {heading} ==")
            spec = load_spec(demo_spec(name)).public_dict()
            with cli._ProgressView(console, enabled=True), results_in_data_dir():
                result = audit(spec)
            cli._print_outcome(console, result, top)
            outcomes.append((title, result))

    say("\n== 2. release audit: MiniLM sentiment v2 (candidate) vs v1 (champion) ==")
    say(f"registering the two fine-tuned versions as {REGISTERED_MODEL} (trained once, then cached):")
    versions = register_sentiment_versions(log=say)
    for title, name in (("heads lens", "sentiment-heads.yaml"), ("data lens", "sentiment-data.yaml")):
        say(f"\n-- {title}: {name} --")
        spec = load_spec(demo_spec(name)).public_dict()
        with cli._ProgressView(console, enabled=True), results_in_data_dir():
            result = release_audit(spec)
        cli._print_outcome(console, result, 10)
        outcomes.append((f"release · {title}", result))

    say("\n== summary ==")
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("run", "model", "audit", "min held-out R²", "gates", "report"):
        table.add_column(column, no_wrap=True)
    for title, r in outcomes:
        version = f" v{r.model.registry_version}" if r.model.registry_version else ""
        table.add_row(title, f"{r.model.name}{version}", r.audit_id[:12], cli._fmt_float(r.min_heldout_r2, 3),
                      {"passed": "pass", "undecided": "UNDECIDED"}.get(r.verdict, "FAIL"), r.report["html"])
    console.print(table)
    say(f"\nMLflow UI:  {cli._mlflow_ui_command()}   then open:")
    for what, address in dashboard_links(outcomes, version=versions[-1]):
        say(f"  {what}:\n    {address}")
    say("Prefect UI: prefect server start   (then http://127.0.0.1:4200)")
    say("More:       spex audits list · spex audits show <id> · spex report <id> · spex ui <id>")
    say(f"demo finished in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
