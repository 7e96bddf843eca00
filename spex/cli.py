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
import unicodedata
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


@app.callback()
def _entry_point() -> None:
    """Every command: offline model loading and telemetry off unless the user set otherwise, and every
    ``SPEX_*`` setting validated before anything starts (a bad one is one line naming the variable)."""
    from spex import settings

    settings.apply_offline_defaults()
    try:
        settings.current()
    except settings.SettingsError as exc:
        _fail(str(exc))


db_app = typer.Typer(help="Metadata database upkeep.", no_args_is_help=True)
audits_app = typer.Typer(help="Recorded audits.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(audits_app, name="audits")

DbOption = Annotated[
    str | None,
    typer.Option("--db", envvar="SPEX_DATABASE_URL", help="Metadata DB URL (default: SQLite in the data dir).", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
JunitOption = Annotated[str | None, typer.Option(
    "--junit", metavar="PATH", help="Also write the gates as JUnit XML (a test case per gate per subject).")]


def shown(text: Any) -> str:
    """``text`` for the terminal: control characters (C0, DEL, C1: the ESC of an ANSI sequence that
    would clear the screen or recolour it) are shown escaped (``\\x1b``), never sent raw. Subject ids,
    feature labels, model names and error messages hold user text; everything the CLI prints of them
    goes through here (the HTML report escapes its own way)."""
    return "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" else c for c in str(text))


def _fail(message: str) -> NoReturn:
    from spex.records.metadata.db import mask_secrets

    line = shown(mask_secrets(" ".join(str(message).split())))
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code=2)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn the failures a read path can meet into the one-line, exit-2 contract."""
    import sqlalchemy as sa

    from spex.records.metadata import (
        AuditNotFound,
        SchemaTooNew,
        StoreConfigError,
        SubjectNotFound,
    )

    try:
        yield
    except typer.Exit:
        raise
    except (AuditNotFound, SubjectNotFound) as exc:
        _fail(exc.args[0] if exc.args else str(exc))
    except (StoreConfigError, SchemaTooNew, ConnectionError, ValueError) as exc:  # SpexInputError included
        _fail(str(exc))
    except sa.exc.SQLAlchemyError as exc:
        text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        _fail(f"database error: {text[0] if text else type(exc).__name__}")


def _store(db: str | None, *, migrate: bool = True) -> Any:
    from spex.records.metadata import MetadataStore

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
    """``--json`` output: strictly valid JSON (dates as ISO text, NaN as null)."""
    from spex.content import to_jsonable

    return json.dumps(to_jsonable(value), indent=2)


# ---------------------------------------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    db: DbOption = None,
) -> None:
    """Migrate the metadata DB to REVISION (default: the newest shipped with spex)."""
    from spex.records.metadata import migrate

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
    from spex.records.metadata import migrate

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
    from spex.records.metadata import migrate

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
            shown(a.model_name),
            shown(a.model_revision if len(a.model_revision) <= 24 else a.model_revision[:21] + "..."),
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
    console.print(shown(f"model      {model.name} @ {model.revision}"
                        + (f"  registry v{model.registry_version}" if model.registry_version else "")
                        + (f"  [{model.source_uri}]" if model.source_uri else "")), markup=False)
    if audit.baseline:
        console.print(shown(f"baseline   {audit.baseline.name} @ {audit.baseline.revision}"), markup=False)
    console.print(f"status     {audit.status}   gates: {_fmt_passed(audit.passed)}   min held-out R²: {_fmt_float(audit.min_heldout_r2)}")
    console.print(f"started    {_fmt_time(audit.started_at)}   finished: {_fmt_time(audit.finished_at)}")
    console.print(f"code       {audit.code_version or '-'}")
    if audit.mlflow_run_id:
        console.print(f"mlflow     run {audit.mlflow_run_id} (experiment {audit.mlflow_experiment_id or '-'})")
    console.print(f"seeds      {json.dumps(audit.seeds)}")
    console.print("spec       " + json.dumps(audit.spec, sort_keys=True))
    if audit.error:
        console.print("error      " + shown(audit.error.splitlines()[0]), markup=False)
    if audit.subjects:
        table = Table(title="subjects", box=None, pad_edge=False, title_justify="left")
        for column in ("subject", "lens", "n", "held-out R²", "masks", "proxy CV R²", "interactions", "mlflow run"):
            table.add_column(column, no_wrap=True)
        for s in audit.subjects:
            v = s.validation
            proxy = s.proxies[0] if s.proxies else None
            table.add_row(
                shown(s.subject.key),
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
            table.add_row(g.metric, _fmt_float(g.value), g.comparator, _fmt_float(g.threshold),
                          "undecided" if getattr(g, "state", None) == "undecided" else _fmt_passed(g.passed))
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
    title = shown(f"{model} · subject {subj.key if subj else subject} · index {index_name} · top {top}")
    versions = list(dict.fromkeys(zip(frame["model_revision"], frame["audit_id"])))

    def name(row: Any) -> str:
        labels = row["labels"]
        members = ", ".join(str(m) for m in row["members"])
        return shown(f"{' × '.join(labels)}  ({members})" if labels is not None else f"({members})")

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


# ------------------------------------------------------------------------------------------ shared with the run commands (flows/cli.py)

TrackingOption = Annotated[
    str | None,
    typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", show_default=False,
                 help="MLflow tracking URI (default: SQLite in the data dir)."),
]


def _mlflow_ui_command(tracking_uri: str | None = None) -> str:
    from spex import settings

    uri = tracking_uri or settings.mlflow_tracking_uri()
    if uri.startswith(("http://", "https://")):
        from spex.records.metadata.db import mask_secrets

        return f"(MLflow server at {mask_secrets(uri)})"
    return f"mlflow ui --backend-store-uri {uri} --port 5000"


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
    """How to open the MLflow UI (runs, figures, metrics, the interaction-drift charts across model
    versions, registry verdicts) and the Prefect UI (flow runs, task runs, retries, cache hits) on an audit."""
    import os
    import uuid

    from spex import settings
    from spex.records import tracking

    with _errors():  # the default store lives in the data dir, which may not be usable
        uri = tracking_uri or settings.mlflow_tracking_uri()
    base = tracking.ui_base(uri)
    lines = ["MLflow UI (audits, subjects, figures, metrics, artifacts, drift across versions, registry verdicts):"]
    if uri.startswith(("http://", "https://")):
        lines.append(f"  open {tracking.experiments_url(base)}")
    else:
        lines.append(f"  {_mlflow_ui_command(uri)}")
        lines.append(f"  then open {tracking.experiments_url(base)}")
    prefect_api = os.environ.get("PREFECT_API_URL")
    lines.append("Prefect UI (flow runs, task runs, retries, cache hits):")
    if prefect_api:
        ui = prefect_api.rstrip("/").removesuffix("/api")
        lines.append(f"  open {ui}")
    else:
        lines.append("  prefect server start        (serves the local Prefect database the audits ran against)")
        lines.append("  then open http://127.0.0.1:4200")
        ui = "http://127.0.0.1:4200"
    audit = None
    if audit_id:
        with _errors():
            with _store(db) as store:
                audit = store.get_audit(audit_id)
        lines.append(f"audit {audit.id} ({audit.kind}, {audit.status}):")
        if audit.mlflow_run_id and audit.mlflow_experiment_id:
            lines.append(f"  MLflow run:    {tracking.run_url(base, audit.mlflow_experiment_id, audit.mlflow_run_id)}")
        try:
            run_uuid = str(uuid.UUID(hex=audit.id))
            lines.append(f"  Prefect run:   {ui}/runs/flow-run/{run_uuid}")
        except ValueError:
            pass
        from spex.report import report_dir

        report = report_dir(audit.id) / "report.html"
        lines.append(f"  report:        {report if report.exists() else f'spex report {audit.id[:12]}'}")
        for s in audit.subjects:
            if s.mlflow_run_id and audit.mlflow_experiment_id:
                lines.append(f"  figures of {s.subject.key}: "
                             f"{tracking.run_url(base, audit.mlflow_experiment_id, s.mlflow_run_id, 'artifacts/figures/interactions.png')}")
        if audit.model is not None and audit.model.registry_version:
            lines.append(f"  registry:      {tracking.model_version_url(base, audit.model.name, audit.model.registry_version)}")
    lines += _drift_lines(uri, base, audit)
    for line in lines:
        typer.echo(line)


def _drift_lines(uri: str, base: str, audit: Any) -> list[str]:
    """The metric-chart views of the drift runs (each top interaction's line across model versions): the
    audit's subjects', or every model's. Nothing when the store is absent or does not answer (``spex ui``
    only prints addresses; it creates no store and waits on no server)."""
    from pathlib import Path
    from urllib.parse import urlparse

    from spex.records import tracking, verdicts

    scheme = urlparse(uri).scheme
    if scheme == "sqlite" and not Path(uri.split(":///", 1)[-1]).exists():
        return []
    if scheme in ("", "file") and not Path(uri.removeprefix("file://")).exists():
        return []
    try:
        tracking.check_store(uri)
        tracker = tracking.AuditTracker(uri)
        if audit is not None:
            if audit.model is None or not audit.model.registry_version:
                return []
            spec = audit.spec or {}
            key = verdicts.spec_key(spec.get("name"), spec.get("lens"))
            runs = [r for s in audit.subjects
                    for r in tracker.drift_runs(audit.model.name, spec_key=key, subject=s.subject.key)]
        else:
            runs = tracker.drift_runs()
    except Exception:  # noqa: BLE001  (addresses only: never fail `spex ui` on the store)
        return []
    if not runs:
        return []
    lines = ["Interaction drift across model versions (metric charts, x = model version):"]
    for run in runs[:DRIFT_LINES_MAX]:
        lines.append(f"  {run.model} · {run.name}: {tracking.metric_charts_url(base, run.experiment_id, run.run_id)}")
    if len(runs) > DRIFT_LINES_MAX:
        lines.append(f"  … and {len(runs) - DRIFT_LINES_MAX} more in the spex-drift/* experiments")
    return lines


DRIFT_LINES_MAX = 20


if __name__ == "__main__":  # pragma: no cover
    app()

