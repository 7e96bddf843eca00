"""The ``spex`` command line: audits, release audits, estimates, reports, and the read paths.

    spex audit SPEC [--model URI]        audit one model version (a Prefect flow run)
    spex release SPEC --candidate URI --baseline URI
                                         candidate vs baseline: diff, gates, pass / fail
    spex estimate SPEC                   what an audit will cost: masks x subjects, measured throughput, ETA
    spex report AUDIT_ID                 (re)build the HTML report + JSON export from the metadata DB
    spex ui [AUDIT_ID]                   how to open the MLflow and Prefect UIs on an audit
    spex db upgrade                      migrate the metadata DB to head (also done on first use)
    spex audits list [--model M] [--status S]
    spex audits show ID                  (a unique id prefix is enough)
    spex interactions --model M --subject S   top interactions of one subject across model versions

Exit codes, for CI: 0 the audit passed (or the command answered), 1 a release gate failed, 2 an error
(a bad spec, an unreachable database, a model that cannot load, ...), reported as ONE line on stderr
that names the problem and the fix; passwords in URLs never appear in output.

The database comes from ``--db`` or ``SPEX_DATABASE_URL`` (default: SQLite in the data dir), MLflow
from ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` (default: SQLite in the data dir).

Layering: this module is the application's entry point, so ``audit`` / ``release`` import the Prefect
flows (``flows/``) lazily, inside those commands; the rest of ``spex/`` never imports ``tasks/``,
``flows/`` or Prefect.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Annotated, Any, NoReturn

import typer

app = typer.Typer(
    name="spex",
    help="Interaction audits for model releases: ablations + SPEX / ProxySPEX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Metadata database upkeep.", no_args_is_help=True)
audits_app = typer.Typer(help="Recorded audits.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(audits_app, name="audits")

DbOption = Annotated[
    str | None,
    typer.Option("--db", envvar="SPEX_DATABASE_URL", help="Metadata DB URL (default: SQLite in the data dir).", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _fail(message: str) -> NoReturn:
    from spex.store.db import mask_secrets

    line = mask_secrets(" ".join(str(message).split()))
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code=2)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn the failures a read path can meet into the one-line, exit-2 contract."""
    import sqlalchemy as sa

    from spex.store import AuditNotFound, SchemaTooNew, StoreConfigError, SubjectNotFound

    try:
        yield
    except typer.Exit:
        raise
    except (AuditNotFound, SubjectNotFound) as exc:
        _fail(exc.args[0] if exc.args else str(exc))
    except (StoreConfigError, SchemaTooNew, ConnectionError, ValueError) as exc:
        _fail(str(exc))
    except sa.exc.SQLAlchemyError as exc:
        text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        _fail(f"database error: {text[0] if text else type(exc).__name__}")


def _store(db: str | None, *, migrate: bool = True) -> Any:
    from spex.store import MetadataStore

    return MetadataStore(db, migrate=migrate)


def _console() -> Any:
    from rich.console import Console

    console = Console(soft_wrap=False, highlight=False)
    if not console.is_terminal:  # piped / captured: never cut ids and labels to 80 columns
        console = Console(soft_wrap=False, highlight=False, width=400)
    return console


def _fmt_time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _fmt_float(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}"


def _fmt_passed(value: bool | None) -> str:
    return "-" if value is None else ("pass" if value else "FAIL")


def _to_json(value: Any) -> str:
    return json.dumps(value, default=lambda o: o.isoformat() if hasattr(o, "isoformat") else repr(o), indent=2)


# ---------------------------------------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    db: DbOption = None,
) -> None:
    """Migrate the metadata DB to REVISION (default: the newest shipped with spex)."""
    from spex.store import migrate

    with _errors():
        store = _store(db, migrate=False)
        try:
            reached = migrate.upgrade(store.engine, revision)
        finally:
            store.close()
        typer.echo(f"{store.url}: at revision {reached}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision ('base' drops every spex table).")],
    db: DbOption = None,
) -> None:
    """Migrate the metadata DB down to REVISION."""
    from spex.store import migrate

    with _errors():
        store = _store(db, migrate=False)
        try:
            reached = migrate.downgrade(store.engine, revision)
        finally:
            store.close()
        typer.echo(f"{store.url}: at revision {reached or 'base'}")


@db_app.command("current")
def db_current(db: DbOption = None) -> None:
    """Print the revision the metadata DB is at, and the newest one available."""
    from spex.store import migrate

    with _errors():
        store = _store(db, migrate=False)
        try:
            current = migrate.current_revision(store.engine)
        finally:
            store.close()
        typer.echo(f"{store.url}: at revision {current or 'base'} (head: {migrate.head_revision()})")


# ------------------------------------------------------------------------------------------ audits


@audits_app.command("list")
def audits_list(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only audits of this model (name).")] = None,
    status: Annotated[str | None, typer.Option("--status", "-s", help="running | succeeded | failed.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many (newest first).")] = 50,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """List audits, newest first."""
    with _errors():
        with _store(db) as store:
            audits = store.list_audits(model=model, status=status, limit=limit)
    if as_json:
        typer.echo(_to_json([asdict(a) for a in audits]))
        return
    if not audits:
        typer.echo("no audits" + (f" of model {model}" if model else "") + (f" with status {status}" if status else ""))
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("id", "model", "revision", "status", "gates", "subjects", "min R²", "started", "finished"):
        table.add_column(column, no_wrap=True)
    for a in audits:
        table.add_row(
            a.id[:12],
            a.model_name,
            a.model_revision if len(a.model_revision) <= 24 else a.model_revision[:21] + "...",
            a.status,
            _fmt_passed(a.passed),
            str(a.n_subjects),
            _fmt_float(a.min_heldout_r2),
            _fmt_time(a.started_at),
            _fmt_time(a.finished_at),
        )
    _console().print(table)


@audits_app.command("show")
def audits_show(
    audit_id: Annotated[str, typer.Argument(metavar="ID", help="Audit id (a unique prefix of 4+ characters).")],
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Show one audit: model, spec, environment, subjects, validations, gates, MLflow runs."""
    with _errors():
        with _store(db) as store:
            audit = store.get_audit(audit_id)
    if as_json:
        typer.echo(_to_json(asdict(audit) | {"min_heldout_r2": audit.min_heldout_r2}))
        return
    from rich.table import Table

    console = _console()
    model = audit.model
    console.print(f"audit      {audit.id}  ({audit.kind})")
    console.print(f"model      {model.name} @ {model.revision}"
                  + (f"  registry v{model.registry_version}" if model.registry_version else "")
                  + (f"  [{model.source_uri}]" if model.source_uri else ""))
    if audit.baseline:
        console.print(f"baseline   {audit.baseline.name} @ {audit.baseline.revision}")
    console.print(f"status     {audit.status}   gates: {_fmt_passed(audit.passed)}   min held-out R²: {_fmt_float(audit.min_heldout_r2)}")
    console.print(f"started    {_fmt_time(audit.started_at)}   finished: {_fmt_time(audit.finished_at)}")
    console.print(f"code       {audit.code_version or '-'}")
    if audit.mlflow_run_id:
        console.print(f"mlflow     run {audit.mlflow_run_id} (experiment {audit.mlflow_experiment_id or '-'})")
    console.print(f"seeds      {json.dumps(audit.seeds)}")
    console.print("spec       " + json.dumps(audit.spec, sort_keys=True))
    if audit.error:
        console.print("error      " + audit.error.splitlines()[0], markup=False)
    if audit.subjects:
        table = Table(title="subjects", box=None, pad_edge=False, title_justify="left")
        for column in ("subject", "lens", "n", "held-out R²", "masks", "proxy CV R²", "interactions", "mlflow run"):
            table.add_column(column, no_wrap=True)
        for s in audit.subjects:
            v = s.validation
            proxy = s.proxies[0] if s.proxies else None
            table.add_row(
                s.subject.key,
                s.subject.lens,
                str(s.subject.n_features or "-"),
                _fmt_float(v.heldout_r2 if v else None),
                str(v.n_heldout) if v and v.n_heldout is not None else "-",
                _fmt_float(proxy.cv_r2 if proxy else None),
                ", ".join(f"{k}: {n}" for k, n in sorted(s.interaction_counts.items())) or "-",
                s.mlflow_run_id or "-",
            )
        console.print(table)
    if audit.gates:
        table = Table(title="gates", box=None, pad_edge=False, title_justify="left")
        for column in ("metric", "value", "", "threshold", "result"):
            table.add_column(column, no_wrap=True)
        for g in audit.gates:
            table.add_row(g.metric, _fmt_float(g.value), g.comparator, _fmt_float(g.threshold), _fmt_passed(g.passed))
        console.print(table)


# ------------------------------------------------------------------------------------ interactions


@app.command("interactions")
def interactions(
    model: Annotated[str, typer.Option("--model", "-m", help="Model name.")],
    subject: Annotated[str, typer.Option("--subject", "-s", help="Subject key, content digest (prefix) or id.")],
    index: Annotated[str | None, typer.Option("--index", "-i", help="Interaction index (needed if several were recorded).")] = None,
    top: Annotated[int, typer.Option("--top", "-k", min=1, help="Top-k per version.")] = 10,
    lens: Annotated[str | None, typer.Option("--lens", help="Disambiguate a subject key shared by lenses.")] = None,
    long: Annotated[bool, typer.Option("--long", help="One row per (version, rank) instead of one per interaction.")] = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """The top interactions of one subject across the audited versions of a model."""
    with _errors():
        with _store(db) as store:
            if index is None:  # audits record several tables (ranking, shapley, pairs): use the ranking's index
                latest = store.list_audits(model=model, status="succeeded", limit=1)
                if latest:
                    index = (store.get_audit(latest[0].id).spec.get("ranking") or {}).get("index")
            frame = store.top_interactions_across_versions(model, subject, index=index, top=top, lens=lens)
    if as_json:
        records = frame.to_dict("records")
        typer.echo(_to_json({"model": model, "subject": subject, "index": frame.attrs.get("index"), "rows": records}))
        return
    if frame.empty:
        _fail(f"no succeeded audit of model {model!r} recorded interactions for subject {subject!r}")
    from rich.table import Table

    index_name = frame.attrs.get("index")
    subj = frame.attrs.get("subject")
    title = f"{model} · subject {subj.key if subj else subject} · index {index_name} · top {top}"
    versions = list(dict.fromkeys(zip(frame["model_revision"], frame["audit_id"])))

    def name(row: Any) -> str:
        labels = row["labels"]
        members = ", ".join(str(m) for m in row["members"])
        return f"{' × '.join(labels)}  ({members})" if labels is not None else f"({members})"

    if long:
        table = Table(box=None, pad_edge=False)
        for column in ("revision", "audit", "rank", "interaction", "order", "value"):
            table.add_column(column, no_wrap=True)
        for _, row in frame.iterrows():
            table.add_row(str(row["model_revision"]), str(row["audit_id"])[:12], str(row["rank"]), name(row),
                          str(row["order"]), _fmt_float(row["value"]))
        console = _console()
        console.print(title, markup=False)
        console.print(table)
        return
    # Wide: one row per interaction found in any version; a column per version: "value (#rank)".
    cells: dict[str, dict[tuple[str, str], str]] = {}
    best: dict[str, tuple[int, int]] = {}
    for _, row in frame.iterrows():
        key = name(row)
        version = (row["model_revision"], row["audit_id"])
        cells.setdefault(key, {})[version] = f"{_fmt_float(row['value'])} (#{row['rank']})"
        rank_key = (-versions.index(version), int(row["rank"]))  # newest version's ranking first
        best[key] = min(best.get(key, rank_key), rank_key)
    table = Table(box=None, pad_edge=False)
    table.add_column("interaction", no_wrap=True)
    for revision, audit_id in versions:
        label = revision if len(revision) <= 20 else revision[:17] + "..."
        table.add_column(f"{label}\n{audit_id[:8]}", no_wrap=True, justify="right")
    for key in sorted(cells, key=lambda k: best[k]):
        table.add_row(key, *[cells[key].get(v, "-") for v in versions])
    console = _console()
    console.print(title, markup=False)
    console.print(table)


# ------------------------------------------------------------------------------------------ audits (run)

TrackingOption = Annotated[
    str | None,
    typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", show_default=False,
                 help="MLflow tracking URI (default: SQLite in the data dir)."),
]
NoCacheOption = Annotated[bool, typer.Option("--no-cache", help="Ignore Prefect's task cache (stored ablations are still reused).")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
TopOption = Annotated[int | None, typer.Option("--top", "-k", min=1, help="Interactions printed per subject (default: the spec's top_k).")]


QUIET_ENV: dict[str, str] = {
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",  # run logs still reach the Prefect UI
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "TRANSFORMERS_VERBOSITY": "error",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
}


def _quiet_libraries() -> None:
    """Keep the terminal for spex's own progress: Prefect run logs, MLflow's migrations and the
    transformers weight-loading bars are noise here (they stay in the Prefect and MLflow UIs).
    Settings the user made in the environment win."""
    import logging
    import os

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


@contextmanager
def _run_errors() -> Iterator[None]:
    """Every failure of an audit run -> one line on stderr and exit 2 (gates failing is exit 1, not here)."""
    from spex.validation import SpexInputError

    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        _fail("interrupted; the audit is marked failed, and a rerun reuses every mask already measured")
    except SpexInputError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001  (CI must get exit 2 and one line, never a traceback)
        import os

        if os.environ.get("SPEX_DEBUG"):
            raise
        _fail(_describe(exc))


def _describe(exc: BaseException) -> str:
    """One line for an unexpected failure: what failed, in the words of the component that failed."""
    import sqlalchemy as sa

    from spex.store import AuditNotFound, SchemaTooNew, StoreConfigError, SubjectNotFound

    if isinstance(exc, (AuditNotFound, SubjectNotFound)):
        return exc.args[0] if exc.args else str(exc)
    if isinstance(exc, (StoreConfigError, SchemaTooNew)):
        return str(exc)
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


class _ProgressView:
    """Per-subject progress with ETA (a rich live display on a terminal, plain lines otherwise),
    fed by the events tasks emit through :mod:`tasks.runtime`."""

    def __init__(self, console: Any, enabled: bool) -> None:
        self.console = console
        self.enabled = enabled
        self.live = enabled and console.is_terminal
        self.rows: dict[str, Any] = {}
        self.progress: Any = None
        self.overall: Any = None
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("masks"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                     console=console, transient=False)

    def __enter__(self) -> _ProgressView:
        from tasks import runtime

        if self.enabled:
            runtime.subscribe(self)
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        from tasks import runtime

        runtime.unsubscribe(self)
        if self.progress is not None:
            self.progress.stop()

    def _line(self, text: str) -> None:
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
                self.overall = self.progress.add_task(f"[bold]{e['model']}", total=total)
                for s in e["subjects"]:
                    self.rows[s["id"]] = self.progress.add_task(f"  {s['id']}: waiting", total=s["budget"] + s["holdout"] + 3)
        elif kind == "model_loaded":
            self._line(f"model loaded: {e['uri']}")
        elif kind == "subject_prepared":
            self._line(f"subject {subject}: n={e['n']} features, budget {e['budget']} masks + {e['holdout']} held out")
        elif kind == "subject_start" and self.progress is not None and subject in self.rows:
            self.progress.update(self.rows[subject], total=e["total"], description=f"  {subject}: ablate")
        elif kind == "masks" and self.progress is not None and subject in self.rows:
            self.progress.update(self.rows[subject], advance=e["count"],
                                 description=f"  {subject}: ablate {e['role']}" + ("" if e.get("computed") else " (stored)"))
            if self.overall is not None:
                self.progress.update(self.overall, advance=e["count"])
        elif kind == "stage" and self.progress is not None and subject in self.rows:
            self.progress.update(self.rows[subject], description=f"  {subject}: {e['stage']}")
        elif kind == "subject_done":
            stats = e.get("stats") or {}
            line = (f"subject {subject}: held-out R² {_fmt_float(e.get('heldout_r2'), 3)}; masks computed "
                    f"{stats.get('computed', 0)}, from store/cache {stats.get('from_store', 0)}")
            if self.progress is not None and subject in self.rows:
                task = next(t for t in self.progress.tasks if t.id == self.rows[subject])
                left = max(0.0, (task.total or 0) - task.completed)
                self.progress.update(self.rows[subject], completed=task.total, description=f"  {subject}: done")
                if self.overall is not None:
                    self.progress.update(self.overall, advance=left)
            self._line(line)
        elif kind == "report":
            self._line(f"report written: {e['html']}")


def _print_outcome(console: Any, result: dict[str, Any], top: int | None) -> None:
    """Ranked interactions per subject, the gate table, where the report is, how to open MLflow."""
    from rich.table import Table

    k = top or 10
    for key, s in result["subjects"].items():
        console.print(f"{result['model']['name']} · {key} · held-out R² {_fmt_float(s['heldout_r2'], 3)}",
                      markup=False, highlight=False, style="bold")
        table = Table(box=None, pad_edge=False)
        for column in ("rank", "interaction", "order", "value"):
            table.add_column(column, no_wrap=True, justify="right" if column != "interaction" else "left")
        for r in s["ranking"][:k]:
            name = " × ".join(r["labels"]) if r.get("labels") else ", ".join(map(str, r["members"]))
            table.add_row(str(r["rank"]), name, str(r["order"]), f"{r['value']:+.4g}")
        console.print(table)
        diff = (result.get("diffs") or {}).get(key)
        if diff:
            console.print(f"  vs baseline: top-{diff['k']} Jaccard {_fmt_float(diff['jaccard'], 3)}, rank correlation "
                          f"{_fmt_float(diff['rank_correlation'], 3)}, max rank shift {diff['max_rank_shift']}, "
                          f"appeared {len(diff['appeared'])}, disappeared {len(diff['disappeared'])}, "
                          f"sign flips {len(diff['sign_flips'])}", markup=False, highlight=False)
        console.print()
    if result["gates"]:
        console.print("gates", style="bold")
        table = Table(box=None, pad_edge=False)
        for column in ("gate", "value", "", "threshold", "result"):
            table.add_column(column, no_wrap=True)
        for g in result["gates"]:
            table.add_row(g["metric"], _fmt_float(g["value"]), g["comparator"], _fmt_float(g["threshold"]),
                          "pass" if g["passed"] else "FAIL")
        console.print(table)
    else:
        console.print("gates: none configured")
    for note in result.get("notes") or []:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    calls = result.get("model_calls") or {}
    console.print(f"model calls: {calls.get('masks_computed', 0)} masks computed, {calls.get('model_loads', 0)} model loads",
                  markup=False, highlight=False, soft_wrap=True)
    console.print(f"report:  {result['report']['html']}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"export:  {result['report']['json']}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"MLflow:  {_mlflow_ui_command()}   then open {_mlflow_run_url(result)}", markup=False, highlight=False, soft_wrap=True)
    verdict = "PASS" if result["passed"] else "FAIL (a gate failed)"
    console.print(f"{result['kind']} {result['audit_id']}: {verdict}", markup=False, highlight=False, soft_wrap=True)


def _mlflow_ui_command(tracking_uri: str | None = None) -> str:
    from spex import config

    uri = tracking_uri or config.mlflow_tracking_uri()
    if uri.startswith(("http://", "https://")):
        from spex.store.db import mask_secrets

        return f"(MLflow server at {mask_secrets(uri)})"
    return f"mlflow ui --backend-store-uri {uri} --port 5000"


def _mlflow_run_url(result: dict[str, Any], tracking_uri: str | None = None) -> str:
    from spex import config

    uri = tracking_uri or config.mlflow_tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{result.get('mlflow_experiment_id')}/runs/{result.get('mlflow_run_id')}"


def _finish(result: dict[str, Any], as_json: bool, quiet: bool, top: int | None, console: Any) -> None:
    if as_json:
        slim = {k: v for k, v in result.items() if k not in ("subjects",)}
        slim["subjects"] = {k: {**{x: y for x, y in s.items() if x != "ranking"}, "top": s["ranking"][: top or 10]}
                            for k, s in result["subjects"].items()}
        if "baseline" in slim:
            slim["baseline"] = {k: v for k, v in slim["baseline"].items() if k not in ("subjects",)}
        typer.echo(_to_json(slim))
    else:
        _print_outcome(console, result, top)
    raise typer.Exit(code=0 if result["passed"] else 1)


@contextmanager
def _connections(db: str | None, tracking_uri: str | None) -> Iterator[None]:
    """Hand ``--db`` / ``--tracking-uri`` to the run through the environment, not as flow parameters:
    Prefect stores a flow run's parameters, and a database URL may carry a password."""
    import os

    saved = {k: os.environ.get(k) for k in ("SPEX_DATABASE_URL", "MLFLOW_TRACKING_URI")}
    try:
        if db:
            os.environ["SPEX_DATABASE_URL"] = db
        if tracking_uri:
            os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _spec_data(spec_path: str) -> dict[str, Any]:
    from spex.spec import load_spec

    return load_spec(spec_path).public_dict()


@app.command("audit")
def audit_command(
    spec: Annotated[str, typer.Argument(metavar="SPEC", help="The audit spec (YAML).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Audit this model instead of the spec's (a URI).")] = None,
    db: DbOption = None,
    tracking_uri: TrackingOption = None,
    no_cache: NoCacheOption = False,
    top: TopOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Audit one model version: ablations, interactions, validation, gates; exit 0 pass / 1 fail / 2 error."""
    _quiet_libraries()
    console = _console()
    with _run_errors():
        data = _spec_data(spec)
        from flows.audit import audit, preflight, results_in_data_dir

        with _connections(db, tracking_uri):
            preflight(data, model)  # model, DB and data dir checked before a Prefect run starts (fast exit 2)
            with _ProgressView(console, enabled=not (quiet or as_json)), results_in_data_dir():
                result = audit(data, model=model, refresh_cache=no_cache)
    _finish(result, as_json, quiet, top or data.get("ranking", {}).get("top_k"), console)


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
    quiet: QuietOption = False,
) -> None:
    """Release audit: audit baseline and candidate, diff their interactions, apply the gates.

    Exit 0 when every gate passes, 1 when a gate fails, 2 on an error."""
    _quiet_libraries()
    console = _console()
    with _run_errors():
        data = _spec_data(spec)
        from flows.audit import preflight, results_in_data_dir
        from flows.release import release_audit, release_models

        with _connections(db, tracking_uri):
            for uri in release_models(data, candidate, baseline):
                preflight(data, uri)  # both models, the DB and the data dir checked before Prefect starts
            with _ProgressView(console, enabled=not (quiet or as_json)), results_in_data_dir():
                result = release_audit(data, candidate=candidate, baseline=baseline, refresh_cache=no_cache)
    _finish(result, as_json, quiet, top or data.get("ranking", {}).get("top_k"), console)


@app.command("estimate")
def estimate_command(
    spec: Annotated[str, typer.Argument(metavar="SPEC", help="The audit spec (YAML).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Estimate for this model instead of the spec's.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Batch size of the warm-up (default: the spec's max_batch, at most 32).")] = None,
    as_json: JsonOption = False,
) -> None:
    """What an audit will cost before running it: masks per subject, what is already stored, the model's
    measured throughput on a short warm-up, and the ETA."""
    _quiet_libraries()
    with _run_errors():
        from spex.spec import load_spec

        audit_spec = load_spec(spec)
        if model:
            audit_spec = audit_spec.model_copy(update={"model": audit_spec.model.model_copy(update={"uri": model})})
        rows, probe = _estimate(audit_spec, batch_size)
    total_masks = sum(r["to_compute"] for r in rows)
    total_seconds = sum(r["seconds"] for r in rows)
    if as_json:
        typer.echo(_to_json({"model": audit_spec.model.uri, "subjects": rows, "throughput": probe,
                             "total_masks": sum(r["masks"] for r in rows), "to_compute": total_masks,
                             "eta_seconds": total_seconds}))
        return
    from rich.table import Table

    console = _console()
    table = Table(title=f"estimate · {audit_spec.model.uri} · {audit_spec.lens} lens · {audit_spec.method}",
                  box=None, pad_edge=False, title_justify="left")
    for column in ("subject", "n", "budget", "design", "held-out", "removal", "stored", "to compute", "ETA"):
        table.add_column(column, no_wrap=True, justify="left" if column == "subject" else "right")
    for r in rows:
        table.add_row(r["subject"], str(r["n"]), str(r["budget"]), str(r["design"]), str(r["holdout"]), str(r["removal"]),
                      str(r["stored"]), str(r["to_compute"]), _fmt_seconds(r["seconds"]))
    console.print(table)
    console.print(f"throughput: {probe['masks_per_s']:.2f} masks/s ({probe['tokens_per_s']:.0f} tokens/s) at batch "
                  f"{probe['batch_size']}, measured on subject {probe['subject']} after a warm-up", markup=False)
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
    """Per subject: masks (design + held-out + removal), already stored, ETA from the measured rate."""
    import numpy as np

    from spex.ablation import AblationStore, measure_throughput
    from spex.config import data_dir
    from spex.masks import holdout as holdout_masks
    from tasks import runtime
    from tasks.sample import design_masks

    store = AblationStore(data_dir() / "ablations")
    size = batch_size or min(audit_spec.batch.max_batch, 32)
    probe: dict[str, Any] | None = None
    rows = []
    for subject in audit_spec.subjects:
        vf = runtime.value_function(audit_spec, subject.id)
        n = int(vf.n_features)
        budget = audit_spec.check_budget(n, subject.id)
        design = design_masks(audit_spec.method, audit_spec.method_options, n, budget, audit_spec.seed)
        held = holdout_masks(n, audit_spec.holdout, audit_spec.seed)
        removal = 3 if audit_spec.removal_r > 0 else 1
        all_masks = np.concatenate([design, held])
        _, found = store.lookup(vf.fingerprint, all_masks)
        cost = np.asarray(vf.cost(all_masks[~found][:256]), dtype=float) if (~found).any() else np.ones(1)
        if probe is None:
            rate = measure_throughput(vf, batch_sizes=(size,), batches=2, warmup=1)[-1]
            probe_cost = float(np.mean(vf.cost(np.ones((1, n), dtype=bool)))) if hasattr(vf, "cost") else 1.0
            probe = {"subject": subject.id, "batch_size": size, "masks_per_s": rate.masks_per_s,
                     "tokens_per_s": rate.tokens_per_s, "cost_per_mask": probe_cost}
        to_compute = int((~found).sum()) + removal
        per_mask_cost = float(cost.mean()) if len(cost) else 1.0
        if probe["tokens_per_s"] > 0 and per_mask_cost > 0:
            seconds = to_compute * per_mask_cost / probe["tokens_per_s"]
        elif probe["masks_per_s"] > 0:
            seconds = to_compute / probe["masks_per_s"]
        else:
            seconds = math.inf
        rows.append({"subject": subject.id, "n": n, "budget": budget, "design": int(len(design)),
                     "holdout": int(len(held)), "removal": removal, "masks": int(len(design) + len(held) + removal),
                     "stored": int(found.sum()), "to_compute": to_compute, "seconds": float(seconds)})
    assert probe is not None
    return rows, probe


@app.command("report")
def report_command(
    audit_id: Annotated[str, typer.Argument(metavar="AUDIT_ID", help="Audit id (a unique prefix of 4+ characters).")],
    out: Annotated[str | None, typer.Option("--out", "-o", help="Folder to write to (default: <data dir>/reports/<audit id>).")] = None,
    db: DbOption = None,
) -> None:
    """(Re)build an audit's HTML report and JSON export from the metadata DB; prints where they are."""
    from pathlib import Path

    from spex.report import write_audit_report

    with _errors():
        with _store(db) as store:
            full = store.resolve_audit_id(audit_id)
            try:
                paths = write_audit_report(store, full, Path(out) if out else None)
            except OSError as exc:
                _fail(f"cannot write the report: {exc.strerror or exc} ({exc.filename}); fix: pass --out to a writable folder")
    typer.echo(f"report: {paths['html']}")
    typer.echo(f"export: {paths['json']}")


@app.command("ui")
def ui_command(
    audit_id: Annotated[str | None, typer.Argument(metavar="[AUDIT_ID]", help="Show the links of this audit (a unique prefix).")] = None,
    db: DbOption = None,
    tracking_uri: TrackingOption = None,
) -> None:
    """How to open the MLflow UI (runs, metrics, ablation sets, proxy models, reports) and the Prefect UI
    (flow runs, task runs, retries, cache hits) on an audit."""
    import os
    import uuid

    from spex import config

    uri = tracking_uri or config.mlflow_tracking_uri()
    lines = ["MLflow UI (audits, subjects, metrics, artifacts, registry tags):"]
    if uri.startswith(("http://", "https://")):
        from spex.store.db import mask_secrets

        lines.append(f"  open {mask_secrets(uri)}")
    else:
        lines.append(f"  {_mlflow_ui_command(uri)}")
        lines.append("  then open http://127.0.0.1:5000")
    prefect_api = os.environ.get("PREFECT_API_URL")
    lines.append("Prefect UI (flow runs, task runs, retries, cache hits):")
    if prefect_api:
        ui = prefect_api.rstrip("/").removesuffix("/api")
        lines.append(f"  open {ui}")
    else:
        lines.append("  prefect server start        (serves the local Prefect database the audits ran against)")
        lines.append("  then open http://127.0.0.1:4200")
        ui = "http://127.0.0.1:4200"
    if audit_id:
        with _errors():
            with _store(db) as store:
                audit = store.get_audit(audit_id)
        mlflow_base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
        lines.append(f"audit {audit.id} ({audit.kind}, {audit.status}):")
        if audit.mlflow_run_id:
            lines.append(f"  MLflow run:    {mlflow_base}/#/experiments/{audit.mlflow_experiment_id}/runs/{audit.mlflow_run_id}")
        try:
            run_uuid = str(uuid.UUID(hex=audit.id))
            lines.append(f"  Prefect run:   {ui}/runs/flow-run/{run_uuid}")
        except ValueError:
            pass
        from spex.report import report_dir

        report = report_dir(audit.id) / "report.html"
        lines.append(f"  report:        {report if report.exists() else f'spex report {audit.id[:12]}'}")
    for line in lines:
        typer.echo(line)


if __name__ == "__main__":  # pragma: no cover
    app()

