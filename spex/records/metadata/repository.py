"""The metadata store's API: record an audit as it runs, read audits back.

Design choices, and why:

* **Idempotent writes.** Every ``record_*`` is an ``INSERT .. ON CONFLICT (natural key) DO UPDATE``
  (SQLite and Postgres share the syntax, so one code path), or, for sets of rows, delete-then-insert
  inside one transaction. A retried task or a re-run flow with the same audit id rewrites rows, never
  adds copies.
* **All or nothing.** An audit's interactions for one (subject, index) are replaced in a single
  transaction that first locks the (audit, subject) row, so concurrent writers of the same subject
  serialize and readers never see half a ranking.
* **Failures are recorded.** Any ``record_*`` that fails rolls back its transaction, marks the audit
  ``failed`` with the error (passwords masked), and re-raises. ``recording()`` does the same for
  arbitrary pipeline code.
* **Short transactions, fixed lock order** (model version -> audit -> subject -> link) so that many
  processes can record into one Postgres without deadlocks; deadlock/serialization errors are still
  retried, as the database may choose a victim under load.
* **A database that goes away comes back.** A lost or refused connection (Postgres restarted, a
  failover, a network blip; SQLite busy) retries the whole transaction with exponential back-off for up
  to ``SPEX_DB_RETRY_SECONDS`` (default 60) before the error surfaces: every write is idempotent, so
  re-running a transaction whose commit was lost in flight is safe. Opening the store does not wait: a
  database that is down when an audit starts is a one-line error before any model call.
* Returns plain dataclasses (``spex.records.metadata.records``), never ORM objects.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from spex.records.metadata import environment
from spex.records.metadata import migrate as migrations
from spex.records.metadata.db import create_engine, describe_url, mask_secrets
from spex.records.metadata.models import (
    AUDIT_STATUSES,
    AblationSet,
    Audit,
    AuditSubject,
    GateResult,
    Interaction,
    ModelVersion,
    ProxyModel,
    Subject,
    Validation,
    utcnow,
)
from spex.records.metadata.records import (
    AblationSetRecord,
    AuditRecord,
    AuditSubjectRecord,
    AuditSummary,
    Gate,
    ModelRef,
    ModelVersionRecord,
    ProxyRecord,
    SubjectRecord,
    ValidationRecord,
)

log = logging.getLogger(__name__)

R = TypeVar("R")

MAX_ERROR_CHARS = 20_000
COMPARATORS = (">=", ">", "<=", "<", "==")
_RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected
# admin shutdown, crash shutdown, cannot connect now (starting up / shutting down), too many connections
_UNAVAILABLE_SQLSTATES = {"57P01", "57P02", "57P03", "53300"}
DB_RETRY_ENV = "SPEX_DB_RETRY_SECONDS"


def _unavailable(exc: sa.exc.DBAPIError, backend: str) -> bool:
    """True when ``exc`` says the database is (for now) unreachable, not that the statement is wrong."""
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, sa.exc.OperationalError):
        return False
    if backend == "sqlite":
        text = str(exc.orig).lower()
        return "locked" in text or "busy" in text
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES


def _retry_seconds() -> float:
    from spex import settings

    return settings.current().db_retry_seconds


class AuditNotFound(LookupError):
    """No audit with that id (or id prefix)."""


class SubjectNotFound(LookupError):
    """No subject matches (or, for a key, several do)."""


def _jsonable(obj: Any, *, mask: bool = False) -> Any:
    """``obj`` as plain JSON values: numpy scalars/arrays unwrapped, tuples/sets to lists, non-finite
    floats to ``None`` (Postgres JSONB rejects NaN), and — with ``mask`` — secrets hidden in strings."""
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, str):
        return mask_secrets(obj) if mask else obj
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v, mask=mask) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist(), mask=mask)
    if isinstance(obj, (set, frozenset)):
        return [_jsonable(v, mask=mask) for v in sorted(obj, key=repr)]
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, mask=mask) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if hasattr(obj, "model_dump"):  # pydantic specs
        return _jsonable(obj.model_dump(mode="json"), mask=mask)
    return mask_secrets(repr(obj)) if mask else repr(obj)


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def format_error(error: str | BaseException) -> str:
    """The text stored in ``audits.error``: type, message and traceback, secrets masked, bounded."""
    if isinstance(error, BaseException):
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__)).strip()
        head = f"{type(error).__name__}: {error}".strip()
        # First line = the one-line summary the CLI shows; the traceback follows.
        text = head + "\n\n" + text if text != head else head
    else:
        text = str(error)
    text = mask_secrets(text)
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS // 2] + "\n...\n" + text[-MAX_ERROR_CHARS // 2 :]
    return text


def members_key(members: Iterable[int]) -> str:
    """Canonical text of a feature set: sorted ids joined by commas (``""`` for the empty set)."""
    return ",".join(str(int(m)) for m in sorted(members))


def _interaction_rows(table: pd.DataFrame | Iterable[Mapping[str, Any]], index: str | None) -> tuple[str, list[dict]]:
    """Validate a spex interaction table and turn it into rows (without audit/subject ids)."""
    if isinstance(table, pd.DataFrame):
        index = index or table.attrs.get("index")
        records = table.to_dict("records")
    else:
        records = [dict(r) for r in table]
    if not index:
        raise ValueError("the interaction index is unknown: pass index= or set table.attrs['index']")
    rows = []
    for position, record in enumerate(records, start=1):
        members = [int(m) for m in record["members"]]
        if len(set(members)) != len(members) or any(m < 0 for m in members):
            raise ValueError(f"row {position}: members must be distinct feature ids >= 0, got {record['members']!r}")
        value = float(record["value"])
        if not math.isfinite(value):
            raise ValueError(f"row {position}: value is {value} for members {tuple(members)}")
        labels = record.get("labels")
        if labels is not None and not (isinstance(labels, float) and math.isnan(labels)):
            labels = [str(label) for label in labels]
            if len(labels) != len(members):
                raise ValueError(f"row {position}: {len(labels)} labels for {len(members)} members")
        else:
            labels = None
        order = record.get("order")
        rank = record.get("rank")
        if labels is not None:
            pairs = sorted(zip(members, labels))
            members, labels = [m for m, _ in pairs], [label for _, label in pairs]
        else:
            members = sorted(members)
        rows.append(
            {
                "index_name": str(index),
                "rank": int(rank) if rank is not None else position,
                "order": int(order) if order is not None else len(members),
                "members_key": members_key(members),
                "members": members,
                "labels": labels,
                "value": value,
            }
        )
    return str(index), rows


def _insert(session: Session, model: type) -> Any:
    """The dialect's INSERT (both offer ``on_conflict_do_update``/``_nothing`` with the same API)."""
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(model)


class MetadataStore:
    """Audit metadata in SQLite or Postgres.

    ``MetadataStore()`` uses ``SPEX_DATABASE_URL`` (default: SQLite in the data dir). The schema is
    migrated to head on first use (pass ``migrate=False`` to leave it alone). Thread-safe: each call
    opens its own short session. Usable as a context manager (disposes the engine's connections).
    """

    def __init__(self, url: str | None = None, *, migrate: bool = True, **engine_kwargs: Any) -> None:
        if url is None:
            from spex.settings import database_url

            url = database_url()
        self.engine = create_engine(url, **engine_kwargs)
        self.url = describe_url(self.engine.url)
        if migrate:
            try:
                migrations.ensure_schema(self.engine)
            except sa.exc.OperationalError as exc:
                self.engine.dispose()
                raise ConnectionError(f"cannot open the metadata DB at {self.url}: {_oneline(exc)}") from exc

    def __repr__(self) -> str:
        return f"MetadataStore({self.url!r})"

    def __enter__(self) -> MetadataStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    def _run(self, work: Callable[[Session], R], *, attempts: int = 4) -> R:
        """Run ``work`` in a transaction, retrying when the database picked it as a deadlock victim
        (``attempts`` times) or could not be reached (back-off up to ``SPEX_DB_RETRY_SECONDS``)."""
        attempt, deadline, delay = 0, None, 0.25
        while True:
            attempt += 1
            try:
                with self._tx() as session:
                    return work(session)
            except sa.exc.DBAPIError as exc:
                sqlstate = getattr(exc.orig, "sqlstate", None)
                if sqlstate in _RETRYABLE_SQLSTATES and attempt < attempts:
                    time.sleep(0.05 * attempt)
                    continue
                if not _unavailable(exc, self.backend):
                    raise
                now = time.monotonic()
                deadline = now + _retry_seconds() if deadline is None else deadline
                if now + delay > deadline:
                    raise
                log.warning("metadata DB %s unavailable (%s); retrying in %.1fs", self.url, _oneline(exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    # ------------------------------------------------------------------ writes

    def _model_version_id(self, session: Session, model: ModelRef) -> int:
        stmt = _insert(session, ModelVersion).values(
            name=model.name,
            revision=model.revision,
            source_uri=model.source_uri,
            registry_version=model.registry_version,
            created_at=utcnow(),
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["name", "revision"],
            set_={
                "source_uri": sa.func.coalesce(stmt.excluded.source_uri, ModelVersion.source_uri),
                "registry_version": sa.func.coalesce(stmt.excluded.registry_version, ModelVersion.registry_version),
            },
        ).returning(ModelVersion.id)
        return int(session.execute(stmt).scalar_one())

    def record_model_version(self, model: ModelRef) -> int:
        """Insert or update a model version; returns its id."""
        return self._run(lambda s: self._model_version_id(s, model))

    def start_audit(
        self,
        model: ModelRef,
        spec: Mapping[str, Any],
        *,
        audit_id: str | None = None,
        kind: str = "audit",
        baseline: ModelRef | None = None,
        seeds: Mapping[str, Any] | Sequence[int] | None = None,
        code_version: str | None = None,
        library_versions: Mapping[str, str] | None = None,
        mlflow_experiment_id: str | None = None,
        mlflow_run_id: str | None = None,
    ) -> str:
        """Open (or re-open) an audit as ``running``; returns its id.

        Pass a stable ``audit_id`` (e.g. the flow run id) to make re-recording idempotent; without
        one a fresh UUID is used. Re-starting an existing audit resets status, error and finish time.
        Code and library versions default to those of this process.
        """
        audit_id = audit_id or uuid.uuid4().hex
        if len(audit_id) > 64:
            raise ValueError("audit_id is longer than 64 characters")
        values = {
            "kind": kind,
            "spec": _jsonable(dict(spec), mask=True),
            "status": "running",
            "passed": None,
            "started_at": utcnow(),
            "finished_at": None,
            "error": None,
            "code_version": code_version or environment.code_version(),
            "library_versions": _jsonable(dict(library_versions or environment.library_versions())),
            "seeds": _jsonable(seeds if seeds is not None else {}),
            "mlflow_experiment_id": mlflow_experiment_id,
            "mlflow_run_id": mlflow_run_id,
        }

        def work(session: Session) -> str:
            mv_id = self._model_version_id(session, model)
            base_id = self._model_version_id(session, baseline) if baseline is not None else None
            stmt = _insert(session, Audit).values(
                id=audit_id, model_version_id=mv_id, baseline_model_version_id=base_id, **values
            )
            update = {k: stmt.excluded[k] for k in values if not k.startswith("mlflow_")}
            update |= {
                "model_version_id": stmt.excluded.model_version_id,
                "baseline_model_version_id": stmt.excluded.baseline_model_version_id,
                "mlflow_experiment_id": sa.func.coalesce(stmt.excluded.mlflow_experiment_id, Audit.mlflow_experiment_id),
                "mlflow_run_id": sa.func.coalesce(stmt.excluded.mlflow_run_id, Audit.mlflow_run_id),
            }
            session.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=update))
            return audit_id

        return self._run(work)

    def _fails_audit(self, audit_id: str, work: Callable[[Session], R]) -> R:
        try:
            return self._run(work)
        except Exception as exc:
            self.fail_audit(audit_id, exc)
            raise

    def attach_mlflow(self, audit_id: str, *, run_id: str, experiment_id: str | None = None) -> None:
        """Store the audit's MLflow parent run (and experiment) ids."""

        def work(session: Session) -> None:
            values: dict[str, Any] = {"mlflow_run_id": run_id}
            if experiment_id is not None:
                values["mlflow_experiment_id"] = experiment_id
            self._update_audit(session, audit_id, values)

        self._fails_audit(audit_id, work)

    def record_subject(
        self,
        audit_id: str,
        *,
        lens: str,
        content_digest: str,
        key: str | None = None,
        labels: Sequence[str] | None = None,
        n_features: int | None = None,
        description: str | None = None,
        mlflow_run_id: str | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> int:
        """Register a subject (global, keyed by lens + content digest) as covered by this audit.

        Returns the subject id that the other ``record_*`` calls take. ``key`` is the human name users
        query by (default: the digest's first 12 characters).
        """
        if labels is not None and n_features is None:
            n_features = len(labels)

        def work(session: Session) -> int:
            if labels is not None and len(labels) != n_features:
                raise ValueError(f"{len(labels)} labels for n_features={n_features}")
            stmt = _insert(session, Subject).values(
                lens=lens,
                content_digest=content_digest,
                key=key or content_digest[:12],
                n_features=n_features,
                labels=[str(x) for x in labels] if labels is not None else None,
                description=description,
                created_at=utcnow(),
            )
            set_: dict[str, Any] = {
                "n_features": sa.func.coalesce(stmt.excluded.n_features, Subject.n_features),
                "description": sa.func.coalesce(stmt.excluded.description, Subject.description),
            }
            if key is not None:
                set_["key"] = stmt.excluded.key
            if labels is not None:
                set_["labels"] = stmt.excluded.labels
            subject_id = int(
                session.execute(
                    stmt.on_conflict_do_update(index_elements=["lens", "content_digest"], set_=set_).returning(Subject.id)
                ).scalar_one()
            )
            link = _insert(session, AuditSubject).values(
                audit_id=audit_id,
                subject_id=subject_id,
                mlflow_run_id=mlflow_run_id,
                metrics=_jsonable(dict(metrics or {})),
                recorded_at=utcnow(),
            )
            link_set: dict[str, Any] = {
                "mlflow_run_id": sa.func.coalesce(link.excluded.mlflow_run_id, AuditSubject.mlflow_run_id),
                "recorded_at": link.excluded.recorded_at,
            }
            if metrics:
                link_set["metrics"] = link.excluded.metrics
            session.execute(link.on_conflict_do_update(index_elements=["audit_id", "subject_id"], set_=link_set))
            return subject_id

        return self._fails_audit(audit_id, work)

    def _lock_link(self, session: Session, audit_id: str, subject_id: int) -> AuditSubject:
        link = session.execute(
            sa.select(AuditSubject)
            .where(AuditSubject.audit_id == audit_id, AuditSubject.subject_id == subject_id)
            .with_for_update()
        ).scalar_one_or_none()
        if link is None:
            raise SubjectNotFound(f"subject {subject_id} is not recorded under audit {audit_id}: call record_subject first")
        return link

    def record_subject_metrics(
        self, audit_id: str, subject_id: int, metrics: Mapping[str, Any], *, mlflow_run_id: str | None = None
    ) -> None:
        """Merge ``metrics`` (calls, seconds per stage, ...) into the subject's per-audit metrics."""

        def work(session: Session) -> None:
            link = self._lock_link(session, audit_id, subject_id)
            link.metrics = {**(link.metrics or {}), **_jsonable(dict(metrics))}
            if mlflow_run_id is not None:
                link.mlflow_run_id = mlflow_run_id

        self._fails_audit(audit_id, work)

    def record_ablation_set(
        self,
        audit_id: str,
        subject_id: int,
        *,
        fingerprint: str,
        n_features: int,
        count: int,
        role: str = "train",
        location: str | None = None,
        size_bytes: int | None = None,
        sha256: str | None = None,
        mlflow_dataset_digest: str | None = None,
    ) -> int:
        """Record where a subject's (masks, values) set lives and how to verify it; returns its id."""
        values = {
            "fingerprint": fingerprint,
            "n_features": int(n_features),
            "count": int(count),
            "location": location,
            "size_bytes": int(size_bytes) if size_bytes is not None else None,
            "sha256": sha256,
            "mlflow_dataset_digest": mlflow_dataset_digest,
            "recorded_at": utcnow(),
        }

        def work(session: Session) -> int:
            stmt = _insert(session, AblationSet).values(audit_id=audit_id, subject_id=subject_id, role=role, **values)
            stmt = stmt.on_conflict_do_update(
                index_elements=["audit_id", "subject_id", "role"], set_={k: stmt.excluded[k] for k in values}
            ).returning(AblationSet.id)
            return int(session.execute(stmt).scalar_one())

        return self._fails_audit(audit_id, work)

    def record_proxy(
        self,
        audit_id: str,
        subject_id: int,
        *,
        hyperparameters: Mapping[str, Any],
        cv_r2: float | None = None,
        mlflow_model_uri: str | None = None,
        method: str = "proxyspex",
        name: str = "proxy",
    ) -> int:
        """Record a fitted proxy (its hyper-parameters, CV R², and where MLflow keeps it); returns its id."""
        values = {
            "method": method,
            "hyperparameters": _jsonable(dict(hyperparameters)),
            "cv_r2": _float_or_none(cv_r2),
            "mlflow_model_uri": mlflow_model_uri,
            "recorded_at": utcnow(),
        }

        def work(session: Session) -> int:
            stmt = _insert(session, ProxyModel).values(audit_id=audit_id, subject_id=subject_id, name=name, **values)
            stmt = stmt.on_conflict_do_update(
                index_elements=["audit_id", "subject_id", "name"], set_={k: stmt.excluded[k] for k in values}
            ).returning(ProxyModel.id)
            return int(session.execute(stmt).scalar_one())

        return self._fails_audit(audit_id, work)

    def record_interactions(
        self,
        audit_id: str,
        subject_id: int,
        table: pd.DataFrame | Iterable[Mapping[str, Any]],
        *,
        index: str | None = None,
    ) -> int:
        """Replace the subject's ranked interactions for ``index`` in one transaction; returns the row count.

        ``table`` is spex's interaction table (``members``, optional ``labels``, ``order``, ``value``,
        ``rank``; the index from ``table.attrs["index"]`` unless given). Either every row is stored
        or none is (and the audit is marked failed).
        """

        def work(session: Session) -> int:
            index_name, rows = _interaction_rows(table, index)
            self._lock_link(session, audit_id, subject_id)
            session.execute(
                sa.delete(Interaction).where(
                    Interaction.audit_id == audit_id,
                    Interaction.subject_id == subject_id,
                    Interaction.index_name == index_name,
                )
            )
            if rows:
                for row in rows:
                    row["audit_id"] = audit_id
                    row["subject_id"] = subject_id
                session.execute(sa.insert(Interaction), rows)
            return len(rows)

        return self._fails_audit(audit_id, work)

    def record_validation(
        self,
        audit_id: str,
        subject_id: int,
        *,
        heldout_r2: float | None,
        n_heldout: int | None,
        removal: Any = None,
        exact_r2: float | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> int:
        """Record faithfulness measured with real model calls (held-out R², removal test); returns its id."""
        values = {
            "heldout_r2": _float_or_none(heldout_r2),
            "n_heldout": int(n_heldout) if n_heldout is not None else None,
            "removal": _jsonable(removal),
            "exact_r2": _float_or_none(exact_r2),
            "metrics": _jsonable(dict(metrics or {})),
            "recorded_at": utcnow(),
        }

        def work(session: Session) -> int:
            stmt = _insert(session, Validation).values(audit_id=audit_id, subject_id=subject_id, **values)
            stmt = stmt.on_conflict_do_update(
                index_elements=["audit_id", "subject_id"], set_={k: stmt.excluded[k] for k in values}
            ).returning(Validation.id)
            return int(session.execute(stmt).scalar_one())

        return self._fails_audit(audit_id, work)

    def record_gates(self, audit_id: str, gates: Iterable[Gate | Mapping[str, Any]]) -> int:
        """Replace the audit's gate results with ``gates`` (one transaction); returns how many."""

        def work(session: Session) -> int:
            rows = []
            for gate in gates:
                g = gate if isinstance(gate, Gate) else Gate(**gate)
                if g.comparator not in COMPARATORS:
                    raise ValueError(f"gate {g.metric!r}: comparator must be one of {COMPARATORS}, got {g.comparator!r}")
                rows.append(
                    {
                        "audit_id": audit_id,
                        "metric": g.metric,
                        "comparator": g.comparator,
                        "threshold": float(g.threshold),
                        "value": _float_or_none(g.value),
                        "passed": bool(g.passed),
                        "details": _jsonable(dict(g.details or {})),
                        "recorded_at": utcnow(),
                    }
                )
            self._lock_audit(session, audit_id)
            session.execute(sa.delete(GateResult).where(GateResult.audit_id == audit_id))
            if rows:
                session.execute(sa.insert(GateResult), rows)
            return len(rows)

        return self._fails_audit(audit_id, work)

    def _lock_audit(self, session: Session, audit_id: str) -> Audit:
        audit = session.execute(
            sa.select(Audit).where(Audit.id == audit_id).with_for_update(key_share=True)
        ).scalar_one_or_none()
        if audit is None:
            raise AuditNotFound(f"no audit {audit_id!r}")
        return audit

    def _update_audit(self, session: Session, audit_id: str, values: Mapping[str, Any]) -> None:
        result = session.execute(sa.update(Audit).where(Audit.id == audit_id).values(**values))
        if result.rowcount == 0:
            raise AuditNotFound(f"no audit {audit_id!r}")

    def finish_audit(self, audit_id: str, *, passed: bool | None = None) -> bool | None:
        """Mark the audit ``succeeded``; ``passed`` defaults to "every recorded gate passed" (``None``
        when there are no gates). Returns ``passed``."""

        def work(session: Session) -> bool | None:
            verdict = passed
            if verdict is None:
                outcomes = session.execute(sa.select(GateResult.passed).where(GateResult.audit_id == audit_id)).scalars().all()
                verdict = all(outcomes) if outcomes else None
            self._update_audit(
                session, audit_id, {"status": "succeeded", "passed": verdict, "finished_at": utcnow(), "error": None}
            )
            return verdict

        return self._run(work)

    def fail_audit(self, audit_id: str, error: str | BaseException) -> bool:
        """Mark the audit ``failed`` with ``error`` (passwords masked). Returns False when no such
        audit exists: it is called on error paths and must not hide the original error."""
        text = format_error(error)
        try:
            self._run(
                lambda s: self._update_audit(
                    s, audit_id, {"status": "failed", "passed": False, "finished_at": utcnow(), "error": text}
                )
            )
        except AuditNotFound:
            return False
        except sa.exc.SQLAlchemyError as exc:  # the DB itself is the problem: log, keep the original error
            log.error("could not mark audit %s failed: %s", audit_id, mask_secrets(_oneline(exc)))
            return False
        return True

    @contextmanager
    def recording(self, audit_id: str) -> Iterator[str]:
        """``with store.recording(audit_id): ...`` marks the audit failed if the block raises, and
        succeeded (gates decide ``passed``) if it completes while the audit is still running."""
        try:
            yield audit_id
        except BaseException as exc:
            self.fail_audit(audit_id, exc)
            raise
        if self._run(lambda s: s.execute(sa.select(Audit.status).where(Audit.id == audit_id)).scalar_one_or_none()) == "running":
            self.finish_audit(audit_id)

    # ------------------------------------------------------------------ reads

    def resolve_audit_id(self, audit_id: str) -> str:
        """The full id of the audit ``audit_id`` names (a full id or a unique prefix of >= 4 chars)."""

        def work(session: Session) -> str:
            if session.get(Audit, audit_id) is not None:
                return audit_id
            if len(audit_id) >= 4:
                like = audit_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                found = session.execute(sa.select(Audit.id).where(Audit.id.like(like, escape="\\")).limit(2)).scalars().all()
                if len(found) == 1:
                    return found[0]
                if len(found) > 1:
                    raise AuditNotFound(f"audit id prefix {audit_id!r} is ambiguous")
            raise AuditNotFound(f"no audit {audit_id!r}")

        return self._run(work)

    def list_audits(
        self, *, model: str | None = None, status: str | None = None, limit: int | None = 50
    ) -> list[AuditSummary]:
        """Audits, newest first, optionally of one model (by name) and one status."""
        if status is not None and status not in AUDIT_STATUSES:
            raise ValueError(f"status must be one of {', '.join(AUDIT_STATUSES)}, got {status!r}")
        n_subjects = (
            sa.select(sa.func.count(AuditSubject.id)).where(AuditSubject.audit_id == Audit.id).scalar_subquery()
        )
        min_r2 = sa.select(sa.func.min(Validation.heldout_r2)).where(Validation.audit_id == Audit.id).scalar_subquery()
        stmt = (
            sa.select(Audit, ModelVersion, n_subjects.label("n_subjects"), min_r2.label("min_r2"))
            .join(ModelVersion, Audit.model_version_id == ModelVersion.id)
            .order_by(Audit.started_at.desc(), Audit.id)
        )
        if model is not None:
            stmt = stmt.where(ModelVersion.name == model)
        if status is not None:
            stmt = stmt.where(Audit.status == status)
        if limit is not None:
            stmt = stmt.limit(limit)

        def work(session: Session) -> list[AuditSummary]:
            return [
                AuditSummary(
                    id=a.id,
                    model_name=mv.name,
                    model_revision=mv.revision,
                    registry_version=mv.registry_version,
                    kind=a.kind,
                    status=a.status,
                    passed=a.passed,
                    started_at=a.started_at,
                    finished_at=a.finished_at,
                    n_subjects=int(n or 0),
                    min_heldout_r2=r2,
                    mlflow_run_id=a.mlflow_run_id,
                    error=a.error.splitlines()[0] if a.error else None,
                )
                for a, mv, n, r2 in session.execute(stmt).all()
            ]

        return self._run(work)

    def get_audit(self, audit_id: str) -> AuditRecord:
        """An audit with everything recorded under it; ``audit_id`` may be a unique prefix."""
        full_id = self.resolve_audit_id(audit_id)

        def work(session: Session) -> AuditRecord:
            audit = session.get(Audit, full_id)
            if audit is None:
                raise AuditNotFound(f"no audit {audit_id!r}")
            model = session.get(ModelVersion, audit.model_version_id)
            baseline = session.get(ModelVersion, audit.baseline_model_version_id) if audit.baseline_model_version_id else None
            links = session.execute(
                sa.select(AuditSubject, Subject)
                .join(Subject, AuditSubject.subject_id == Subject.id)
                .where(AuditSubject.audit_id == full_id)
                .order_by(Subject.key, Subject.id)
            ).all()
            by_subject: dict[str, dict[int, list[Any]]] = {"ablation": {}, "proxy": {}}
            for row in session.execute(
                sa.select(AblationSet).where(AblationSet.audit_id == full_id).order_by(AblationSet.role)
            ).scalars():
                by_subject["ablation"].setdefault(row.subject_id, []).append(_ablation_record(row))
            for row in session.execute(
                sa.select(ProxyModel).where(ProxyModel.audit_id == full_id).order_by(ProxyModel.name)
            ).scalars():
                by_subject["proxy"].setdefault(row.subject_id, []).append(_proxy_record(row))
            validations = {
                v.subject_id: _validation_record(v)
                for v in session.execute(sa.select(Validation).where(Validation.audit_id == full_id)).scalars()
            }
            counts: dict[int, dict[str, int]] = {}
            for subject_id, index_name, count in session.execute(
                sa.select(Interaction.subject_id, Interaction.index_name, sa.func.count())
                .where(Interaction.audit_id == full_id)
                .group_by(Interaction.subject_id, Interaction.index_name)
            ).all():
                counts.setdefault(subject_id, {})[index_name] = int(count)
            gates = session.execute(
                sa.select(GateResult).where(GateResult.audit_id == full_id).order_by(GateResult.metric)
            ).scalars()
            return AuditRecord(
                id=audit.id,
                model=_model_record(model),
                baseline=_model_record(baseline) if baseline else None,
                kind=audit.kind,
                spec=audit.spec,
                status=audit.status,
                passed=audit.passed,
                started_at=audit.started_at,
                finished_at=audit.finished_at,
                code_version=audit.code_version,
                library_versions=audit.library_versions,
                seeds=audit.seeds,
                error=audit.error,
                mlflow_experiment_id=audit.mlflow_experiment_id,
                mlflow_run_id=audit.mlflow_run_id,
                subjects=tuple(
                    AuditSubjectRecord(
                        subject=_subject_record(subject),
                        mlflow_run_id=link.mlflow_run_id,
                        metrics=link.metrics,
                        ablation_sets=tuple(by_subject["ablation"].get(subject.id, ())),
                        proxies=tuple(by_subject["proxy"].get(subject.id, ())),
                        validation=validations.get(subject.id),
                        interaction_counts=counts.get(subject.id, {}),
                    )
                    for link, subject in links
                ),
                gates=tuple(
                    Gate(
                        metric=g.metric,
                        threshold=g.threshold,
                        value=g.value,
                        passed=g.passed,
                        comparator=g.comparator,
                        details=g.details,
                    )
                    for g in gates
                ),
            )

        return self._run(work)

    def get_interactions(self, audit_id: str, subject_id: int, *, index: str | None = None) -> pd.DataFrame:
        """The ranked interactions an audit recorded for a subject, as spex's interaction table.

        Columns ``members`` (tuple), ``labels`` (tuple or None), ``order``, ``value``, ``rank``;
        ``attrs["index"]`` names the index. With several indices recorded, pass ``index``.
        """

        def work(session: Session) -> pd.DataFrame:
            where = [Interaction.audit_id == audit_id, Interaction.subject_id == subject_id]
            chosen = index or self._only_index(session, where)
            rows = session.execute(
                sa.select(Interaction).where(*where, Interaction.index_name == chosen).order_by(Interaction.rank)
            ).scalars().all()
            return _frame(rows, chosen)

        return self._run(work)

    @staticmethod
    def _only_index(session: Session, where: Sequence[Any]) -> str | None:
        names = session.execute(sa.select(Interaction.index_name).where(*where).distinct()).scalars().all()
        if len(names) > 1:
            raise ValueError(f"several indices recorded ({', '.join(sorted(names))}); pick one with index=")
        return names[0] if names else None

    def find_subjects(self, subject: int | str, *, lens: str | None = None) -> list[SubjectRecord]:
        """Subjects named by id, key, or content digest (full or a prefix of >= 8 characters)."""

        def work(session: Session) -> list[SubjectRecord]:
            stmt = sa.select(Subject)
            if isinstance(subject, int):
                stmt = stmt.where(Subject.id == subject)
            else:
                text = str(subject)
                conditions = [Subject.key == text, Subject.content_digest == text]
                if text.isdigit():
                    conditions.append(Subject.id == int(text))
                if len(text) >= 8 and text.isalnum():
                    conditions.append(Subject.content_digest.startswith(text))
                stmt = stmt.where(sa.or_(*conditions))
            if lens is not None:
                stmt = stmt.where(Subject.lens == lens)
            return [_subject_record(s) for s in session.execute(stmt.order_by(Subject.id)).scalars()]

        return self._run(work)

    def top_interactions_across_versions(
        self,
        model: str,
        subject: int | str,
        *,
        index: str | None = None,
        top: int = 10,
        statuses: Sequence[str] = ("succeeded",),
        lens: str | None = None,
    ) -> pd.DataFrame:
        """The top ``top`` interactions of one subject in the latest audit of each version of ``model``.

        ``subject``: a subject id, key or content digest (must name exactly one subject). One row per
        (version, rank): columns ``model_revision``, ``registry_version``, ``audit_id``,
        ``started_at``, ``rank``, ``members``, ``labels``, ``order``, ``value``; versions in the order
        they were audited. ``attrs["index"]`` names the index.
        """
        matches = self.find_subjects(subject, lens=lens)
        if not matches:
            raise SubjectNotFound(f"no subject {subject!r}")
        if len(matches) > 1:
            names = ", ".join(f"{m.lens}:{m.content_digest[:12]} ({m.key})" for m in matches)
            raise SubjectNotFound(f"subject {subject!r} is ambiguous: {names}; pass a content digest or --lens")
        subject_id = matches[0].id

        def work(session: Session) -> pd.DataFrame:
            chosen = index or self._only_index(
                session,
                [
                    Interaction.subject_id == subject_id,
                    Interaction.audit_id.in_(
                        sa.select(Audit.id)
                        .join(ModelVersion, Audit.model_version_id == ModelVersion.id)
                        .where(ModelVersion.name == model, Audit.status.in_(statuses))
                    ),
                ],
            )
            columns = ["model_revision", "registry_version", "audit_id", "started_at", "rank", "members", "labels", "order", "value"]
            if chosen is None:
                out = pd.DataFrame(columns=columns)
                out.attrs["index"] = None
                return out
            has_rows = (
                sa.select(Interaction.id)
                .where(Interaction.audit_id == Audit.id, Interaction.subject_id == subject_id, Interaction.index_name == chosen)
                .exists()
            )
            candidates = session.execute(
                sa.select(Audit.id, Audit.started_at, ModelVersion.id, ModelVersion.revision, ModelVersion.registry_version)
                .join(ModelVersion, Audit.model_version_id == ModelVersion.id)
                .where(ModelVersion.name == model, Audit.status.in_(statuses), has_rows)
                .order_by(Audit.started_at.desc(), Audit.id.desc())
            ).all()
            latest: dict[int, tuple[Any, ...]] = {}
            for audit_id, started_at, mv_id, revision, registry_version in candidates:
                latest.setdefault(mv_id, (audit_id, started_at, revision, registry_version))
            chosen_audits = sorted(latest.values(), key=lambda t: (t[1], t[0]))
            rows = session.execute(
                sa.select(Interaction)
                .where(
                    Interaction.subject_id == subject_id,
                    Interaction.index_name == chosen,
                    Interaction.rank <= top,
                    Interaction.audit_id.in_([a[0] for a in chosen_audits]),
                )
                .order_by(Interaction.rank)
            ).scalars().all()
            by_audit: dict[str, list[Interaction]] = {}
            for row in rows:
                by_audit.setdefault(row.audit_id, []).append(row)
            records = [
                {
                    "model_revision": revision,
                    "registry_version": registry_version,
                    "audit_id": audit_id,
                    "started_at": started_at,
                    "rank": r.rank,
                    "members": tuple(r.members),
                    "labels": tuple(r.labels) if r.labels is not None else None,
                    "order": r.order,
                    "value": r.value,
                }
                for audit_id, started_at, revision, registry_version in chosen_audits
                for r in by_audit.get(audit_id, [])
            ]
            # object columns: keep None as None (pandas would infer a string dtype with NaN)
            out = pd.DataFrame(
                {
                    column: pd.Series(
                        [r[column] for r in records],
                        dtype={"rank": "int64", "order": "int64", "value": "float64"}.get(column, object),
                    )
                    for column in columns
                }
            )
            out.attrs["index"] = chosen
            out.attrs["subject"] = _subject_record(session.get(Subject, subject_id))
            return out

        return self._run(work)

    def counts(self) -> dict[str, int]:
        """Row count of every table (diagnostics, tests)."""
        from spex.records.metadata.models import Base

        def work(session: Session) -> dict[str, int]:
            return {
                t.name: int(session.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
                for t in Base.metadata.sorted_tables
            }

        return self._run(work)


def _oneline(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _model_record(m: ModelVersion) -> ModelVersionRecord:
    return ModelVersionRecord(
        id=m.id, name=m.name, revision=m.revision, source_uri=m.source_uri,
        registry_version=m.registry_version, created_at=m.created_at,
    )


def _subject_record(s: Subject) -> SubjectRecord:
    return SubjectRecord(
        id=s.id, lens=s.lens, content_digest=s.content_digest, key=s.key, n_features=s.n_features,
        labels=tuple(s.labels) if s.labels is not None else None, description=s.description,
    )


def _ablation_record(a: AblationSet) -> AblationSetRecord:
    return AblationSetRecord(
        id=a.id, role=a.role, fingerprint=a.fingerprint, n_features=a.n_features, count=a.count,
        location=a.location, size_bytes=a.size_bytes, sha256=a.sha256, mlflow_dataset_digest=a.mlflow_dataset_digest,
    )


def _proxy_record(p: ProxyModel) -> ProxyRecord:
    return ProxyRecord(
        id=p.id, name=p.name, method=p.method, hyperparameters=p.hyperparameters, cv_r2=p.cv_r2,
        mlflow_model_uri=p.mlflow_model_uri,
    )


def _validation_record(v: Validation) -> ValidationRecord:
    return ValidationRecord(
        id=v.id, heldout_r2=v.heldout_r2, n_heldout=v.n_heldout, removal=v.removal, exact_r2=v.exact_r2,
        metrics=v.metrics,
    )


def _frame(rows: Sequence[Interaction], index: str | None) -> pd.DataFrame:
    has_labels = any(r.labels is not None for r in rows)
    data: dict[str, list[Any]] = {"members": [tuple(r.members) for r in rows]}
    if has_labels:
        data["labels"] = [tuple(r.labels) if r.labels is not None else None for r in rows]
    data["order"] = [r.order for r in rows]
    data["value"] = [r.value for r in rows]
    data["rank"] = [r.rank for r in rows]
    frame = pd.DataFrame(data)
    if not rows:
        frame = frame.astype({"order": int, "value": float, "rank": int})
    frame.attrs["index"] = index
    return frame
