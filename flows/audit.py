"""The audit flow: one model version × the subjects of one lens → records in MLflow and the metadata
DB, an HTML report, gates.

    from flows.audit import audit
    result = audit(spec_dict)                     # or spec_dict + model="models:/sentiment/4"
    result["passed"], result["report"]["html"]

Order matters for "nothing partial": everything that can reject the input (the spec, the model URI,
each subject's value function and budget) runs BEFORE the audit is opened in the DB and MLflow; once
opened, any failure marks the audit failed, closes its MLflow runs as FAILED, and re-raises.

The flow itself only chains tasks; every stage is a task in :mod:`tasks` (cached on content hashes,
retried on transient errors, model calls holding one of the machine's model slots: kernel file locks that
a killed process gives back, see :func:`tasks.runtime.model_slot`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import flow
from prefect.context import get_run_context

from spex import settings
from spex.audit.diff import evaluate_gates
from spex.audit.spec import AuditSpec, ModelSpec, subject_digest, validate_spec
from tasks import runtime
from tasks.fit import fit
from tasks.prepare import lens_versions, prepare_subject, resolve_model
from tasks.record import (
    diff_against_baseline,
    fail_audit,
    finish_audit,
    open_audit,
    publish,
    reap_crashed_audits,
    record_subject,
    write_report,
)
from tasks.runners import LocalChunks, RayChunks, open_runner, parse_runner
from tasks.sample import sample_masks
from tasks.search import search
from tasks.validate import plan_removal, validate


def with_model(spec: AuditSpec, model: str | dict[str, Any] | None) -> AuditSpec:
    """The spec with its model replaced (a URI keeps the spec's device / dtype options)."""
    if model is None:
        return spec
    if isinstance(model, str):
        return spec.model_copy(update={"model": spec.model.model_copy(update={"uri": model})})
    return spec.model_copy(update={"model": ModelSpec.model_validate(model)})


@contextmanager
def results_in_data_dir() -> Iterator[None]:
    """Keep Prefect's task results (the task cache) under the spex data dir while flows run in this
    process — unless the operator configured Prefect's result storage (then theirs is used).

    Why outside the flow: a task's result store is the flow run's, fixed when the run starts, so the
    setting must be in force before the flow is called (the CLI, the demo and the tests wrap their
    calls in this). Deployments served by workers use Prefect's configured storage, as usual.
    """
    import os

    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    configured = any(os.environ.get(k) for k in ("PREFECT_LOCAL_STORAGE_PATH", "PREFECT_RESULTS_LOCAL_STORAGE_PATH",
                                                  "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"))
    if configured:
        yield
        return
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: settings.data_dir() / "prefect" / "results"}):
        yield


def check_data_dir() -> None:
    """The data dir exists, takes data, and has room (ablations, the SQLite DB, MLflow's local store,
    reports and caches all go there): a probe of real bytes is written and synced (an empty file is
    created even on a full disk), and ``SPEX_MIN_FREE_MB`` (default 64) must be free."""
    import os
    import shutil
    import tempfile

    from spex.errors import SpexInputError

    where = os.environ.get("SPEX_DATA_DIR") or "~/.spex"  # as the user wrote it
    fix = "fix: point SPEX_DATA_DIR at a writable folder with free space"
    try:
        root = settings.data_dir()
        with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-") as probe:
            probe.write(b"\0" * (256 << 10))
            probe.flush()
            os.fsync(probe.fileno())
        free = shutil.disk_usage(root).free
    except OSError as exc:
        raise SpexInputError(
            f"the data dir {where} is not writable ({exc.strerror or type(exc).__name__}); {fix}") from None
    need = settings.current().min_free_mb
    if free < need * (1 << 20):
        raise SpexInputError(f"the data dir {where} has {free / (1 << 20):.1f} MB free, less than the {need:g} MB an "
                             f"audit needs at least (SPEX_MIN_FREE_MB); {fix}")


def check_environment(db_url: str | None) -> None:
    """Before any model call: the data dir is writable and the metadata DB answers (connected,
    migrated). Raises a one-line error naming what is wrong and how to fix it."""
    from spex.errors import SpexInputError

    check_data_dir()
    try:
        runtime.metadata_store(db_url)
    except ConnectionError as exc:
        raise SpexInputError(f"{exc}; fix: start the database or point SPEX_DATABASE_URL / --db at one that is up") from None


def preflight(spec: dict[str, Any], model: str | dict[str, Any] | None = None, db_url: str | None = None) -> str:
    """Check, without Prefect and without loading weights, that the spec is valid, its model resolves
    (the path exists, the registry version or alias exists), the metadata DB answers and the data dir
    is writable; returns the model's cheap key. The CLI calls it first, so a typo or a database that is
    down fails in a second with exit 2, before a Prefect server starts or a model is called."""
    from spex.audit.spec import SpecError
    from spex.errors import SpexInputError

    audit_spec = with_model(validate_spec(spec), model)
    audit_spec.check_offline()  # n vs budget from the text alone, custom model code not trusted: no model load
    check_data_dir()
    try:
        key = runtime.cheap_model_key(audit_spec.model)
    except SpecError:
        raise
    except SpexInputError as exc:  # e.g. a registry version that does not exist: name the field
        message = " ".join(str(exc).split())
        raise SpecError(message if message.startswith("spec field") else f"spec field `model`: {message}",
                        field="model") from None
    check_environment(db_url)
    return key


def _flow_run_id() -> str:
    try:
        return get_run_context().flow_run.id.hex  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001  (called outside a flow run: a fresh id)
        import uuid

        return uuid.uuid4().hex


def _add(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        total[key] = total.get(key, 0) + value


@flow(name="spex-audit", log_prints=False)
def audit(spec: dict[str, Any], model: str | dict[str, Any] | None = None, kind: str = "audit",
          baseline_model: dict[str, Any] | None = None, baseline_audit_id: str | None = None,
          db_url: str | None = None, tracking_uri: str | None = None, refresh_cache: bool = False,
          runner: str = "local") -> dict[str, Any]:
    """Audit one model version on the spec's subjects; returns the outcome (ids, gates, report paths).

    ``model`` overrides the spec's model (a URI, or a model mapping). With ``baseline_audit_id`` the
    audit is compared with that recorded audit (a release audit): the diff gates apply and the report
    shows the diff. ``refresh_cache`` ignores Prefect's task cache (the ablation store still serves
    stored masks: nothing measured is ever measured twice). ``runner``: where the ablation chunks run —
    ``local`` (this process, one chunk after the other) or ``ray`` / ``ray=ADDRESS`` (concurrent Ray tasks,
    one per GPU; see :mod:`tasks.runners` and docs/scale-out.md).
    """
    settings.apply_offline_defaults()  # a flow run (CLI, worker, notebook) is an entry point
    parse_runner(runner)  # a bad runner is an input error before anything starts
    audit_spec = with_model(validate_spec(spec), model)
    with open_runner(runner) as chunks:
        return _audit(audit_spec, kind, baseline_model, baseline_audit_id, db_url, tracking_uri, refresh_cache,
                      chunks)


def _audit(audit_spec: AuditSpec, kind: str, baseline_model: dict[str, Any] | None, baseline_audit_id: str | None,
           db_url: str | None, tracking_uri: str | None, refresh_cache: bool,
           chunks: LocalChunks | RayChunks) -> dict[str, Any]:
    spec_dict = audit_spec.public_dict()
    root = settings.data_dir()
    store_root = str(root / "ablations")
    loads_before = dict(runtime.COUNTERS)
    started = time.perf_counter()
    opts = {"refresh_cache": True} if refresh_cache else {}
    check_environment(db_url)  # before any model call: a DB that is down costs no GPU time
    audit_id = _flow_run_id()
    # -- everything that can reject the input, before anything is recorded
    model_key = runtime.cheap_model_key(audit_spec.model)
    model_info = resolve_model.with_options(**opts)(spec_dict, model_key)
    versions = lens_versions()
    infos = []
    for s in audit_spec.subjects:
        info = prepare_subject.with_options(**opts)(spec_dict, s.id, model_key, subject_digest(audit_spec, s), versions)
        budget = audit_spec.check_budget(info["n"], s.id)  # the spec's budget: a spec error before any ablation
        infos.append({**info, "budget": budget})
        runtime.emit("subject_prepared", subject=s.id, n=info["n"], budget=budget, holdout=audit_spec.holdout)
    runtime.emit("audit_start", audit_id=audit_id, kind=kind, model=model_info["name"], uri=audit_spec.model.uri,
                 revision=model_info["revision"],
                 subjects=[{"id": i["id"], "n": i["n"], "budget": i["budget"], "holdout": audit_spec.holdout}
                           for i in infos])
    extra = {"baseline_audit_id": baseline_audit_id} if baseline_audit_id else None
    reap_crashed_audits(db_url, tracking_uri)  # audits of killed processes: failed, MLflow runs closed
    opened = open_audit(db_url, tracking_uri, audit_id, model_info, spec_dict, kind, baseline_model, extra)
    run_id = opened["run_id"]
    try:
        outcome = _audit_subjects(audit_spec, spec_dict, infos, store_root, opened, db_url, tracking_uri,
                                  refresh_cache, chunks)
        diffs = None
        if baseline_audit_id:
            diffs = diff_against_baseline(db_url, audit_id, baseline_audit_id, audit_spec.ranking.index,
                                          audit_spec.ranking.top_k)
        gates = [g.as_dict() for g in evaluate_gates(
            audit_spec.gates, faithfulness={k: v["heldout_r2"] for k, v in outcome.items()},
            rankings={k: v["ranking"] for k, v in outcome.items()}, diffs=diffs, k=audit_spec.ranking.top_k,
            without_baseline="skip")]  # a routine audit (or a release's baseline leg): release gates do not apply
        r2s = [v["heldout_r2"] for v in outcome.values() if v["heldout_r2"] is not None]
        faithfulness = min(r2s) if r2s else None
        totals: dict[str, Any] = {}
        for v in outcome.values():
            _add(totals, {k: v["stats"][k] for k in ("computed", "from_store", "cached_chunks", "chunks")})
        passed = finish_audit(db_url, tracking_uri, audit_id, run_id, gates,
                              {"min_heldout_r2": faithfulness, "masks_computed": totals.get("computed", 0),
                               "masks_from_store": totals.get("from_store", 0),
                               "seconds": time.perf_counter() - started})
        report = write_report(db_url, audit_id, str(root / "reports" / audit_id))
        published = publish(tracking_uri, run_id, audit_id, report, model_info, passed, faithfulness)
    except BaseException as exc:
        fail_audit(db_url, tracking_uri, audit_id, run_id, f"{type(exc).__name__}: {exc}", model_info)
        raise
    result = {
        "audit_id": audit_id,
        "kind": kind,
        "passed": bool(passed),
        "gates": gates,
        "diffs": diffs,
        "model": model_info,
        "baseline_audit_id": baseline_audit_id,
        "mlflow_run_id": run_id,
        "mlflow_experiment_id": opened["experiment_id"],
        "report": report,
        "registry_tags": published.get("registry_tags"),
        "min_heldout_r2": faithfulness,
        "subjects": {k: {key: v[key] for key in ("heldout_r2", "ranking", "n", "budget", "stats", "removal")}
                     for k, v in outcome.items()},
        "notes": ([f"gates {', '.join(g for g in ('top_k_jaccard_min', 'max_rank_shift') if getattr(audit_spec.gates, g) is not None)} "
                   "compare with a baseline and apply to release audits (spex release)"]
                  if audit_spec.gates.needs_baseline and not baseline_audit_id else []),
        "model_calls": {"masks_computed": int(totals.get("computed", 0)),
                        "model_loads": runtime.COUNTERS["model_loads"] - loads_before["model_loads"],
                        "value_functions_built": runtime.COUNTERS["value_functions"] - loads_before["value_functions"]},
        "seconds": time.perf_counter() - started,
        "runner": chunks.describe(),
    }
    runtime.emit("audit_done", audit_id=audit_id, passed=result["passed"], report=report["html"])
    return result


def _audit_subjects(audit_spec: AuditSpec, spec_dict: dict[str, Any], infos: list[dict[str, Any]], store_root: str,
                    opened: dict[str, Any], db_url: str | None, tracking_uri: str | None,
                    refresh: bool, chunks: LocalChunks | RayChunks) -> dict[str, dict[str, Any]]:
    """Sample → ablate → fit → search → validate → record, subject by subject.

    With a concurrent runner (Ray) the train and held-out masks of the subjects ahead are submitted
    before this subject is gathered (enough chunks to keep every worker busy twice over, at least the
    next subject), so the workers compute while the flow fits, validates and records subject by subject;
    the window bounds the masks held in flight for an audit of thousands of prompts."""
    opts = {"refresh_cache": True} if refresh else {}
    chunk = audit_spec.batch.chunk_size
    outcome = {}

    def sample(info: dict[str, Any]) -> tuple[dict[str, Any], float]:
        t = time.perf_counter()
        samples = sample_masks.with_options(**opts)(audit_spec.method, audit_spec.method_options, info["n"],
                                                    info["budget"], audit_spec.seed, audit_spec.holdout,
                                                    subject=info["id"])
        return samples, time.perf_counter() - t

    submitted: dict[str, Any] = {}

    def submit_ahead(current: int) -> None:
        for k in range(current, len(infos)):
            ahead = infos[k]
            if ahead["id"] in submitted:
                continue
            if k > current + 1 and chunks.running() >= 2 * chunks.slots:
                break
            samples, took = sample(ahead)
            submitted[ahead["id"]] = (samples, took, [
                chunks.submit(spec_dict, ahead, samples[role], store_root, role, chunk, refresh)
                for role in ("train", "holdout")])

    for position, info in enumerate(infos):
        sid = info["id"]
        seconds: dict[str, float] = {}
        if chunks.concurrent:
            submit_ahead(position)
            samples, seconds["sample"], pending = submitted.pop(sid)
        else:  # computed when gathered, in this process
            samples, seconds["sample"] = sample(info)
            pending = [chunks.submit(spec_dict, info, samples[role], store_root, role, chunk, refresh)
                       for role in ("train", "holdout")]
        runtime.emit("subject_start", subject=sid,
                     total=len(samples["train"]) + len(samples["holdout"]) + 3)
        t = time.perf_counter()
        (train, s1), (held, s2) = (p.gather() for p in pending)  # Ray: the other subjects' chunks keep running
        seconds["ablate"] = time.perf_counter() - t
        t = time.perf_counter()
        fitted = fit.with_options(**opts)(info["fingerprint"], audit_spec.method, audit_spec.method_options, info["n"],
                                          info["budget"], audit_spec.seed, samples["train"], train, subject=sid)
        seconds["fit"] = time.perf_counter() - t
        t = time.perf_counter()
        ranking = audit_spec.ranking
        tables = search(fitted["spectrum"], info["labels"], ranking.index, ranking.order, ranking.record_top,
                        subject=sid)
        seconds["search"] = time.perf_counter() - t
        t = time.perf_counter()
        plan = plan_removal(fitted["spectrum"], audit_spec.removal_r, info["labels"], subject=sid)
        removal_values, s3 = chunks.submit(spec_dict, info, plan["masks"], store_root, "removal", chunk, refresh).gather()
        validation = validate(fitted["spectrum"], samples["holdout"], held, plan, removal_values, subject=sid)
        seconds["validate"] = time.perf_counter() - t
        stats: dict[str, Any] = {}
        for part in (s1, s2, s3):
            _add(stats, part)
        t = time.perf_counter()
        recorded = record_subject(db_url, tracking_uri, opened["audit_id"], opened["run_id"], audit_spec.lens, info,
                                  samples, {"train": train, "holdout": held}, fitted, tables, validation,
                                  {**stats, "seconds": seconds})
        seconds["record"] = time.perf_counter() - t
        outcome[sid] = {"heldout_r2": validation["heldout_r2"], "ranking": tables["ranking"], "n": info["n"],
                        "budget": info["budget"], "stats": {**stats, "seconds": seconds},
                        "removal": validation["removal"], "subject_id": recorded["subject_id"]}
        runtime.emit("subject_done", subject=sid, heldout_r2=validation["heldout_r2"], stats=stats)
    return outcome
