"""The ``spex`` commands that run audits: ``spex audit``, ``spex release``, ``spex estimate``.

They live here, above ``tasks/``, because they start Prefect flows; the read paths (db, audits,
interactions, report, ui) stay in :mod:`spex.cli`, which imports nothing from tasks/ or flows/. This
module registers its commands on the same Typer app, and the ``spex`` console script points here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from spex import settings
from spex.cli import (  # noqa: F401  (shared helpers and options)
    DbOption,
    JsonOption,
    JunitOption,
    TrackingOption,
    _console,
    _fail,
    _fmt_float,
    _mlflow_ui_command,
    _to_json,
    app,
    shown,
)
from spex.errors import SpexInputError
from tasks.runner_spec import parse_runner

if TYPE_CHECKING:
    from spex.audit.pipeline import AuditOutcome

# ------------------------------------------------------------------------------------------ audits (run)

NoCacheOption = Annotated[bool, typer.Option("--no-cache", help="Ignore Prefect's task cache (stored ablations are still reused).")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
RunnerOption = Annotated[str, typer.Option(
    "--runner", metavar="local|ray[=ADDRESS]",
    help="Where the ablation chunks run: local (this process, default), ray (a temporary local Ray cluster, or "
         "RAY_ADDRESS's) or ray=ADDRESS (an existing cluster: HOST:PORT, ray://HOST:10001, auto); one task per GPU. "
         "See docs/scale-out.md.")]
TopOption = Annotated[int | None, typer.Option("--top", "-k", min=1, help="Interactions printed per subject (default: the spec's top_k).")]


QUIET_ENV: dict[str, str] = {
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",  # run logs still reach the Prefect UI
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "TRANSFORMERS_VERBOSITY": "error",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
    # The ephemeral Prefect API's first start on a new machine creates and migrates its database; Prefect
    # waits 20 s for it, and on a busy 2-core machine `make demo` timed out there (seen on a fresh HOME).
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


def _quiet_libraries() -> None:
    """Keep the terminal for spex's own progress: Prefect run logs, MLflow's migrations and the
    transformers weight-loading bars are noise here (they stay in the Prefect and MLflow UIs).
    Settings the user made in the environment win."""
    import logging
    import os

    from spex import settings

    settings.apply_offline_defaults()
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in ("mlflow", "alembic", "httpx", "lightgbm"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    except Exception:  # noqa: BLE001
        pass


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI cancel, ``docker stop``), raised in the main thread: the run unwinds exactly as on
    Ctrl-C (the audit is marked failed, Prefect's API server is stopped) instead of dying silently."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextmanager
def _on_sigterm_unwind() -> Iterator[None]:
    """SIGTERM -> :class:`Terminated` for the block (main thread only; the old handler comes back)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _run_errors() -> Iterator[None]:
    """Every failure of an audit run -> one line on stderr and exit 2 (gates failing is exit 1, not here)."""
    from spex.errors import SpexInputError

    try:
        with _on_sigterm_unwind():
            yield
    except typer.Exit:
        raise
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        _fail(f"{what}; the audit is marked failed, and a rerun reuses every mask already measured")
    except SpexInputError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001  (CI must get exit 2 and one line, never a traceback)
        import os

        # Read raw, not through spex.settings: this is the error path, and a bad setting may be the error.
        if os.environ.get("SPEX_DEBUG") not in (None, "", "0", "false"):
            raise
        _fail(_describe(exc))


def _describe(exc: BaseException) -> str:
    """One line for an unexpected failure: what failed, in the words of the component that failed."""
    import sqlalchemy as sa

    from spex.records.metadata import (
        AuditNotFound,
        SchemaTooNew,
        StoreConfigError,
        SubjectNotFound,
    )

    if isinstance(exc, (AuditNotFound, SubjectNotFound)):
        return exc.args[0] if exc.args else str(exc)
    if isinstance(exc, (StoreConfigError, SchemaTooNew)):
        return str(exc)
    if isinstance(exc, sa.exc.SQLAlchemyError) and _raised_in(exc, "mlflow"):  # MLflow's own SQL store
        text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return (f"MLflow store error: {text[0] if text else type(exc).__name__}; fix: check MLFLOW_TRACKING_URI / "
                f"--tracking-uri and that the store is reachable and writable")
    if isinstance(exc, sa.exc.SQLAlchemyError):
        text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"database error: {text[0] if text else type(exc).__name__}; fix: check SPEX_DATABASE_URL / --db and that the database is up"
    module = type(exc).__module__.split(".")[0]
    if module == "mlflow":
        message = getattr(exc, "message", None) or str(exc)
        return f"MLflow error: {str(message).splitlines()[0] if message else type(exc).__name__}; fix: check MLFLOW_TRACKING_URI / --tracking-uri and that the server is up"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''} (set SPEX_DEBUG=1 for the traceback)"


def _raised_in(exc: BaseException, package: str) -> bool:
    """Whether ``exc`` was raised from inside ``package`` (a frame of its code on the traceback): a
    SQLAlchemy error of MLflow's store must not be blamed on the metadata DB."""
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0] == package:
            return True
        tb = tb.tb_next
    return False


def _task_text(text: str) -> str:
    """A progress row's description: rich reads it as markup, so the user's text in it (subject ids,
    model names) is escaped for markup and for the terminal."""
    from rich.markup import escape

    return escape(shown(text))


class _ProgressView:
    """Per-subject progress with ETA (a rich live display on a terminal, plain lines otherwise),
    fed by the events the audit's stages emit through :mod:`spex.audit.progress`."""

    PLAIN_EVERY_S = 20.0  # without a terminal (CI logs): a progress line per subject at most this often

    def __init__(self, console: Any, enabled: bool) -> None:
        self.console = console
        self.enabled = enabled
        self.live = enabled and console.is_terminal
        self.rows: dict[str, Any] = {}
        self.plain: dict[str, dict[str, float]] = {}  # per subject: total, done, computed, start, printed
        self.progress: Any = None
        self.overall: Any = None
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("masks"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                     console=console, transient=False)

    def __enter__(self) -> _ProgressView:
        from spex.audit import progress

        if self.enabled:
            progress.subscribe(self)
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        from spex.audit import progress

        progress.unsubscribe(self)
        if self.progress is not None:
            self.progress.stop()

    def _line(self, text: str) -> None:
        text = shown(text)  # subject ids and model names are the user's text
        if self.progress is not None:
            self.progress.console.log(text, markup=False, highlight=False)
        else:
            self.console.print(text, markup=False, highlight=False)

    def __call__(self, e: dict[str, Any]) -> None:
        kind = e["event"]
        subject = e.get("subject")
        if kind == "audit_start":
            self._line(f"{e['kind']} {e['audit_id'][:12]}: {e['model']} ({e['uri']}), {len(e['subjects'])} subjects")
            if self.progress is not None:
                total = sum(s["budget"] + s["holdout"] + 3 for s in e["subjects"])
                self.overall = self.progress.add_task("[bold]" + _task_text(e["model"]), total=total)
                for s in e["subjects"]:
                    self.rows[s["id"]] = self.progress.add_task(_task_text(f"  {s['id']}: waiting"), total=s["budget"] + s["holdout"] + 3)
        elif kind == "model_loaded":
            self._line(f"model loaded: {e['uri']}")
        elif kind == "subject_prepared":
            self._line(f"subject {subject}: n={e['n']} features, budget {e['budget']} masks + {e['holdout']} held out")
        elif kind == "subject_start" and self.progress is None:
            import time

            now = time.monotonic()
            self.plain[subject] = {"total": e["total"], "done": 0, "computed": 0, "start": now, "printed": now}
        elif kind == "masks" and self.progress is None and subject in self.plain:
            self._plain_progress(subject, e)
        elif kind == "subject_start" and self.progress is not None and subject in self.rows:
            self.progress.update(self.rows[subject], total=e["total"], description=_task_text(f"  {subject}: ablate"))
        elif kind == "masks" and self.progress is not None and subject in self.rows:
            self.progress.update(self.rows[subject], advance=e["count"],
                                 description=_task_text(f"  {subject}: ablate {e['role']}" + ("" if e.get("computed") else " (stored)")))
            if self.overall is not None:
                self.progress.update(self.overall, advance=e["count"])
        elif kind == "stage" and self.progress is not None and subject in self.rows:
            self.progress.update(self.rows[subject], description=_task_text(f"  {subject}: {e['stage']}"))
        elif kind == "subject_done":
            stats = e.get("stats") or {}
            line = (f"subject {subject}: held-out R² {_fmt_float(e.get('heldout_r2'), 3)}; masks computed "
                    f"{stats.get('computed', 0)}, from store/cache {stats.get('from_store', 0)}")
            if self.progress is not None and subject in self.rows:
                task = next(t for t in self.progress.tasks if t.id == self.rows[subject])
                left = max(0.0, (task.total or 0) - task.completed)
                self.progress.update(self.rows[subject], completed=task.total, description=_task_text(f"  {subject}: done"))
                if self.overall is not None:
                    self.progress.update(self.overall, advance=left)
            self._line(line)
        elif kind == "report":
            self._line(f"report written: {e['html']}")


    def _plain_progress(self, subject: str, e: dict[str, Any]) -> None:
        """A line per subject every ``PLAIN_EVERY_S`` seconds of ablation: masks done of its total and an
        ETA from the rate of the masks the model computed (stored ones cost nothing)."""
        import time

        state, now = self.plain[subject], time.monotonic()
        state["done"] += e["count"]
        if e.get("computed"):
            state["computed"] += e["count"]
        if now - state["printed"] < self.PLAIN_EVERY_S or state["computed"] == 0:
            return
        state["printed"] = now
        rate = state["computed"] / max(now - state["start"], 1e-9)
        left = max(0.0, state["total"] - state["done"])
        self._line(f"subject {subject}: ablate {e['role']} {int(state['done'])}/{int(state['total'])} masks, "
                   f"{rate:.2f} masks/s, ETA {_fmt_seconds(left / rate)}")


def _print_outcome(console: Any, result: AuditOutcome, top: int | None) -> None:
    """Ranked interactions per subject, the gate table, where the report is, how to open MLflow."""
    from rich.table import Table

    k = top or 10
    for key, s in result.subjects.items():
        low, high = s.heldout_r2_interval
        interval = f" [{_fmt_float(low, 3)}, {_fmt_float(high, 3)}]" if low is not None and high is not None else ""
        console.print(shown(f"{result.model.name} · {key} · held-out R² {_fmt_float(s.heldout_r2, 3)}{interval}"),
                      markup=False, highlight=False, style="bold")
        table = Table(box=None, pad_edge=False)
        for column in ("rank", "interaction", "order", "value", "± se", "interval"):
            table.add_column(column, no_wrap=True, justify="right" if column != "interaction" else "left")
        for r in s.ranking[:k]:
            name = " × ".join(r["labels"]) if r.get("labels") else ", ".join(map(str, r["members"]))
            se = r.get("se")
            ci = (f"[{r['ci_low']:+.4g}, {r['ci_high']:+.4g}]" if r.get("ci_low") is not None
                  and r.get("ci_high") is not None else "unknown")
            table.add_row(str(r["rank"]), shown(name), str(r["order"]), f"{r['value']:+.4g}",
                          f"{se:.2g}" if se is not None else "unknown", ci)
        console.print(table)
        diff = (result.diffs or {}).get(key)
        if diff:
            console.print(f"  vs baseline: top-{diff['k']} Jaccard {_fmt_float(diff['jaccard'], 3)}, rank correlation "
                          f"{_fmt_float(diff['rank_correlation'], 3)}, max rank shift {diff['max_rank_shift']}, "
                          f"appeared {len(diff['appeared'])}, disappeared {len(diff['disappeared'])}, "
                          f"sign flips {len(diff['sign_flips'])}", markup=False, highlight=False)
            significant = [c for c in diff.get("tested", []) if c["significant"]]
            lines = [f"  significant changes (BH at FDR {diff.get('fdr', 0.05):g}, |Δ| ≥ "
                     f"{diff.get('min_effect', 0.0):g}): {len(significant)}"]
            lines += [f"    {c['kind']}: {c['name']}  Δ {_fmt_float(c['delta'], 3)} ± {_fmt_float(c['delta_se'], 3)}"
                      f"  q {_fmt_float(c['q_value'], 3)}" for c in significant[:10]]
            for line in lines:  # one print per line: shown() escapes a newline inside a label
                console.print(shown(line), markup=False, highlight=False, soft_wrap=True)
        console.print()
    if result.gates:
        console.print("gates", style="bold")
        table = Table(box=None, pad_edge=False)
        for column in ("gate", "value", "", "threshold", "result"):
            table.add_column(column, no_wrap=True)
        for g in result.gates:
            table.add_row(g.metric, _fmt_float(g.value), g.comparator, _fmt_float(g.threshold),
                          {"passed": "pass", "failed": "FAIL", "undecided": "UNDECIDED"}[g.state])
        console.print(table)
    else:
        console.print("gates: none configured")
    for note in result.notes:
        console.print(shown(f"note: {note}"), markup=False, highlight=False, soft_wrap=True)
    calls = result.model_calls
    console.print(f"model calls: {calls.get('masks_computed', 0)} masks computed, {calls.get('model_loads', 0)} model loads",
                  markup=False, highlight=False, soft_wrap=True)
    console.print(f"report:  {result.report['html']}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"export:  {result.report['json']}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"MLflow:  {_mlflow_ui_command()}   then open {_mlflow_run_url(result)}", markup=False, highlight=False, soft_wrap=True)
    verdict = {"passed": "PASS", "undecided": "UNDECIDED (a gate is within noise of its threshold; raise "
               "max_budget to let the audit add masks)"}.get(result.verdict, "FAIL (a gate failed)")
    for r in result.budget_rounds:
        console.print(f"budget round {r['round']}: gates {', '.join(r['undecided_gates'])} undecided; "
                      f"{r['masks_added']} masks added", markup=False, highlight=False, soft_wrap=True)
    console.print(f"{result.kind} {result.audit_id}: {verdict}", markup=False, highlight=False, soft_wrap=True)


def _mlflow_run_url(result: AuditOutcome, tracking_uri: str | None = None) -> str:
    from spex.records import tracking

    uri = tracking_uri or settings.mlflow_tracking_uri()
    return tracking.run_url(tracking.ui_base(uri), result.mlflow_experiment_id, result.mlflow_run_id)


def _json_outcome(result: AuditOutcome, top: int | None) -> dict[str, Any]:
    """What ``--json`` prints: the outcome with each subject's ranking cut to its ``top`` rows, and the
    baseline's outcome (a release audit) without its subjects."""
    full = result.to_dict()
    slim = {k: v for k, v in full.items() if k != "subjects"}
    slim["subjects"] = {k: {**{x: y for x, y in s.items() if x != "ranking"}, "top": s["ranking"][: top or 10]}
                        for k, s in full["subjects"].items()}
    if "baseline" in slim:
        slim["baseline"] = {k: v for k, v in slim["baseline"].items() if k != "subjects"}
    return slim


EXIT_CODES = {"passed": 0, "failed": 1, "undecided": 3}  # 2: the audit could not run (input, environment)


def exit_code(result: AuditOutcome) -> int:
    """0 every gate passed, 1 a gate failed, 3 undecided: no gate failed but one is within noise of its
    threshold at the largest budget allowed (``max_budget``)."""
    return EXIT_CODES.get(result.verdict, 0 if result.passed else 1)


def _check_junit_path(path: str | None) -> None:
    """A ``--junit`` path that cannot be written is an input error before anything runs."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise SpexInputError(f"--junit {path}: is a directory; fix: name a file, e.g. {target / 'spex-gates.xml'}",
                             field="--junit")
    parent = target.parent if str(target.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise SpexInputError(f"--junit {path}: the folder {parent} is not writable", field="--junit")


def _finish(result: AuditOutcome, as_json: bool, quiet: bool, top: int | None, console: Any,
            junit: str | None = None) -> None:
    if junit is not None:
        from spex.audit.junit import write_junit

        write_junit(result, junit)
    if as_json:
        typer.echo(_to_json(_json_outcome(result, top)))
    else:
        _print_outcome(console, result, top)
    raise typer.Exit(code=exit_code(result))


@contextmanager
def _connections(db: str | None, tracking_uri: str | None) -> Iterator[None]:
    """Hand ``--db`` / ``--tracking-uri`` to the run through the environment, not as flow parameters:
    Prefect stores a flow run's parameters, and a database URL may carry a password."""
    given = {"SPEX_DATABASE_URL": db, "MLFLOW_TRACKING_URI": tracking_uri}
    with settings.scoped_environ({k: v for k, v in given.items() if v}):
        yield


def _spec_data(spec_path: str) -> dict[str, Any]:
    from spex.audit.spec import load_spec

    return load_spec(spec_path).public_dict()


def _preflight_before_prefect(data: dict[str, Any], models: list[Any]) -> None:
    """Every check of an audit or release run that needs no Prefect, before Prefect is imported: the
    spec, each model, MLflow, the metadata DB, the data dir (:func:`spex.audit.preflight.preflight`) and
    Prefect's home (:func:`flows.api_server.check_home`). A bad input is then one line, never preceded
    by Prefect's warnings about its home, and costs no Prefect start."""
    from flows.api_server import check_home
    from spex.audit.preflight import preflight

    for uri in models:
        preflight(data, uri)
    check_home()


@app.command("audit")
def audit_command(
    spec: Annotated[str, typer.Argument(metavar="SPEC", help="The audit spec (YAML).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Audit this model instead of the spec's (a URI).")] = None,
    db: DbOption = None,
    tracking_uri: TrackingOption = None,
    no_cache: NoCacheOption = False,
    top: TopOption = None,
    as_json: JsonOption = False,
    junit: JunitOption = None,
    quiet: QuietOption = False,
    runner: RunnerOption = "local",
) -> None:
    """Audit one model version: ablations, interactions, validation, gates; exit 0 pass / 1 fail / 2 error / 3 undecided."""
    _quiet_libraries()
    console = _console()
    with _run_errors():
        parse_runner(runner)  # a bad --runner is exit 2 before anything starts (no store created)
        _check_junit_path(junit)
        data = _spec_data(spec)
        with _connections(db, tracking_uri):
            _preflight_before_prefect(data, [model])
            from flows.api_server import prefect_api
            from flows.audit import audit
            from tasks.caching import results_in_data_dir

            with prefect_api(), _ProgressView(console, enabled=not (quiet or as_json)), results_in_data_dir():
                result = audit(data, model=model, refresh_cache=no_cache, runner=runner)
    _finish(result, as_json, quiet, top or data.get("ranking", {}).get("top_k"), console, junit)


@app.command("release")
def release_command(
    spec: Annotated[str, typer.Argument(metavar="SPEC", help="The audit spec (YAML).")],
    candidate: Annotated[str | None, typer.Option("--candidate", "-c", help="Candidate model URI (default: the spec's model).")] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", "-b", help="Baseline model URI (default: the spec's baseline).")] = None,
    db: DbOption = None,
    tracking_uri: TrackingOption = None,
    no_cache: NoCacheOption = False,
    top: TopOption = None,
    as_json: JsonOption = False,
    junit: JunitOption = None,
    quiet: QuietOption = False,
    runner: RunnerOption = "local",
) -> None:
    """Release audit: audit baseline and candidate, diff their interactions, apply the gates.

    Exit 0 when every gate passes, 1 when a gate fails, 2 on an error, 3 undecided."""
    _quiet_libraries()
    console = _console()
    with _run_errors():
        parse_runner(runner)  # a bad --runner is exit 2 before anything starts (no store created)
        _check_junit_path(junit)
        data = _spec_data(spec)
        with _connections(db, tracking_uri):
            from spex.audit.preflight import release_models

            _preflight_before_prefect(data, release_models(data, candidate, baseline))
            from flows.api_server import prefect_api
            from flows.release import release_audit
            from tasks.caching import results_in_data_dir

            with prefect_api(), _ProgressView(console, enabled=not (quiet or as_json)), results_in_data_dir():
                result = release_audit(data, candidate=candidate, baseline=baseline, refresh_cache=no_cache,
                                       runner=runner)
    _finish(result, as_json, quiet, top or data.get("ranking", {}).get("top_k"), console, junit)


@app.command("estimate")
def estimate_command(
    spec: Annotated[str, typer.Argument(metavar="SPEC", help="The audit spec (YAML).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Estimate for this model instead of the spec's.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Batch size of the warm-up (default: the spec's max_batch, at most 32).")] = None,
    as_json: JsonOption = False,
) -> None:
    """What an audit will cost before running it: masks per subject, what is already stored, the tokens they
    cost, the model's measured throughput on a short warm-up, and the ETA."""
    _quiet_libraries()
    with _run_errors():
        from spex.audit.spec import load_spec

        audit_spec = load_spec(spec)
        if model:
            audit_spec = audit_spec.model_copy(update={"model": audit_spec.model.model_copy(update={"uri": model})})
        audit_spec.check_offline()  # n vs budget, untrusted custom code: before the model loads
        rows, probe = _estimate(audit_spec, batch_size)
    total_masks = sum(r["to_compute"] for r in rows)
    total_seconds = sum(r["seconds"] for r in rows)
    if as_json:
        typer.echo(_to_json({"model": audit_spec.model.uri, "subjects": rows, "throughput": probe,
                             "total_masks": sum(r["masks"] for r in rows), "to_compute": total_masks,
                             "tokens": sum(r["tokens"] for r in rows), "eta_seconds": total_seconds}))
        return
    from rich.table import Table

    console = _console()
    table = Table(title=shown(f"estimate · {audit_spec.model.uri} · {audit_spec.lens} lens · {audit_spec.method}"),
                  box=None, pad_edge=False, title_justify="left")
    for column in ("subject", "n", "budget", "design", "held-out", "removal", "stored", "to compute", "tokens/mask",
                   "tokens", "ETA"):
        table.add_column(column, no_wrap=True, justify="left" if column == "subject" else "right")
    for r in rows:
        table.add_row(shown(r["subject"]), str(r["n"]), str(r["budget"]), str(r["design"]), str(r["holdout"]), str(r["removal"]),
                      str(r["stored"]), str(r["to_compute"]), f"{r['tokens_per_mask']:,.0f}", f"{r['tokens']:,.0f}",
                      _fmt_seconds(r["seconds"]))
    console.print(table)
    console.print(f"throughput: {probe['masks_per_s']:.2f} masks/s ({probe['tokens_per_s']:.0f} tokens/s) at batch "
                  f"{probe['batch_size']}, measured on subject {shown(probe['subject'])} (the most tokens per mask) after "
                  f"a warm-up; each ETA is the subject's tokens at that rate", markup=False)
    console.print(f"total: {sum(r['masks'] for r in rows)} masks over {len(rows)} subjects, {total_masks} to compute; "
                  f"ETA {_fmt_seconds(total_seconds)} of model time (plus proxy fits and recording, typically seconds "
                  f"per subject)", markup=False)


def _fmt_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _estimate(audit_spec: Any, batch_size: int | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per subject: masks (design + held-out + removal), already stored, the tokens they cost, and the ETA.

    Model time follows tokens, not masks: a 40-passage RAG prompt costs ten times a 5-passage one. So
    every subject's masks are costed by its value function (``vf.cost``: tokens per masked prompt), the
    throughput is measured on the subject whose masks cost most (where the time goes; conservative for
    the others), in batches packed as the ablation engine packs them (its token budget: the spec's
    ``batch.token_budget``, else the lens's ``batch_tokens``), and each ETA is its tokens / tokens per s."""
    import numpy as np

    from spex.ablation import AblationStore, measure_throughput
    from spex.ablation.engine import lens_token_budget
    from spex.audit import runtime
    from spex.audit.sampling import design_masks
    from spex.engine.sampling import holdout as holdout_masks
    from spex.settings import data_dir

    store = AblationStore(data_dir() / "ablations")
    rows, functions = [], []
    for subject in audit_spec.subjects:
        vf = runtime.value_function(audit_spec, subject.id)
        n = int(vf.n_features)
        budget = audit_spec.check_budget(n, subject.id)
        design = design_masks(audit_spec.method, audit_spec.method_options, n, budget, audit_spec.seed)
        held = holdout_masks(n, audit_spec.holdout, audit_spec.seed)
        removal = 3 if audit_spec.removal_r > 0 else 1
        all_masks = np.concatenate([design, held])
        _, found = store.lookup(vf.fingerprint, all_masks)
        missing = all_masks[~found]
        sample = missing[:: max(1, len(missing) // 256)][:256] if len(missing) else np.ones((1, n), dtype=bool)
        per_mask = float(np.mean(np.asarray(vf.cost(sample), dtype=float))) if hasattr(vf, "cost") else 1.0
        to_compute = int((~found).sum()) + removal
        rows.append({"subject": subject.id, "n": n, "budget": budget, "design": int(len(design)),
                     "holdout": int(len(held)), "removal": removal, "masks": int(len(design) + len(held) + removal),
                     "stored": int(found.sum()), "to_compute": to_compute, "tokens_per_mask": per_mask,
                     "tokens": to_compute * per_mask})
        functions.append(vf)
    heaviest = max(range(len(rows)), key=lambda i: rows[i]["tokens_per_mask"])
    vf, n = functions[heaviest], rows[heaviest]["n"]
    size = batch_size or min(audit_spec.batch.max_batch, 32)
    token_budget = audit_spec.batch.token_budget or lens_token_budget(vf)
    full_cost = float(np.max(vf.cost(np.ones((1, n), dtype=bool)))) if hasattr(vf, "cost") else 1.0
    if token_budget is not None and batch_size is None:  # as the engine packs the longest rows
        size = max(1, min(size, math.floor(token_budget / max(full_cost, 1e-9))))
    rate = measure_throughput(vf, batch_sizes=(size,), batches=2, warmup=1)[-1]
    probe = {"subject": rows[heaviest]["subject"], "batch_size": size, "masks_per_s": rate.masks_per_s,
             "tokens_per_s": rate.tokens_per_s, "cost_per_mask": full_cost, "token_budget": token_budget}
    for r in rows:
        if probe["tokens_per_s"] > 0 and r["tokens_per_mask"] > 0:
            r["seconds"] = float(r["tokens"] / probe["tokens_per_s"])
        elif probe["masks_per_s"] > 0:
            r["seconds"] = float(r["to_compute"] / probe["masks_per_s"])
        else:
            r["seconds"] = math.inf
    return rows, probe


if __name__ == "__main__":
    app()
