"""Recording an audit as it runs: every write idempotent, all or nothing, failures recorded.

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
* **Fixed lock order** (model version -> audit -> subject -> link) so that many processes can record
  into one Postgres without deadlocks.
"""

from __future__ import annotations

import logging
import math
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from spex.content import to_jsonable
from spex.records.gate import Gate
from spex.records.gate import verdict as gate_verdict
from spex.records.metadata import environment
from spex.records.metadata.db import mask_secrets
from spex.records.metadata.errors import AuditNotFound, SubjectNotFound
from spex.records.metadata.models import (
    AblationSet,
    Audit,
    AuditSubject,
    GateResult,
    Interaction,
    ModelVersion,
    ProxyModel,
    Subject,
    VERDICTS,
    Validation,
    utcnow,
)
from spex.records.metadata.records import ModelRef
from spex.records.metadata.sessions import R, Sessions, oneline

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 20_000
COMPARATORS = (">=", ">", "<=", "<", "==")
INTERVAL_FIELDS = ("se", "ci_low", "ci_high")  # an interaction's uncertainty (spex.engine.uncertainty)


def _float_or_none(value: Any) -> float | None:
    if value is None or value is pd.NA:
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
                **_interval(record, position),
            }
        )
    return str(index), rows


def _interval(record: Mapping[str, Any], position: int) -> dict[str, float | None]:
    """The row's standard error and interval (None where absent, NaN or infinite: unknown), checked."""
    out = {key: _float_or_none(record.get(key)) for key in INTERVAL_FIELDS}
    if out["se"] is not None and out["se"] < 0:
        raise ValueError(f"row {position}: se is negative ({out['se']})")
    if out["ci_low"] is not None and out["ci_high"] is not None and out["ci_low"] > out["ci_high"]:
        raise ValueError(f"row {position}: ci_low {out['ci_low']} is above ci_high {out['ci_high']}")
    return out


def _insert(session: Session, model: type) -> Any:
    """The dialect's INSERT (both offer ``on_conflict_do_update``/``_nothing`` with the same API)."""
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(model)



class Writes(Sessions):
    """The store's writes: open, record into, and close an audit."""

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
            "spec": to_jsonable(dict(spec), text=mask_secrets),
            "status": "running",
            "passed": None,
            "verdict": None,
            "started_at": utcnow(),
            "finished_at": None,
            "error": None,
            "code_version": code_version or environment.code_version(),
            "library_versions": to_jsonable(dict(library_versions or environment.library_versions())),
            "seeds": to_jsonable(seeds if seeds is not None else {}),
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
                metrics=to_jsonable(dict(metrics or {})),
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
            link.metrics = {**(link.metrics or {}), **to_jsonable(dict(metrics))}
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
            "hyperparameters": to_jsonable(dict(hyperparameters)),
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
        ``rank``, and the value's ``se``, ``ci_low``, ``ci_high`` — NaN or None: unknown; the index from
        ``table.attrs["index"]`` unless given). Either every row is stored or none is (and the audit is
        marked failed).
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
            "removal": to_jsonable(removal),
            "exact_r2": _float_or_none(exact_r2),
            "metrics": to_jsonable(dict(metrics or {})),
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
                g = gate if isinstance(gate, Gate) else Gate.from_dict(gate)
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
                        "state": g.state,
                        "details": to_jsonable(dict(g.details or {})),
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

    def finish_audit(self, audit_id: str, *, passed: bool | None = None, verdict: str | None = None) -> bool | None:
        """Mark the audit ``succeeded`` with its ``verdict`` (passed / failed / undecided) and ``passed``
        (``verdict == "passed"``); returns ``passed``.

        ``verdict`` defaults to ``passed``'s (True: passed, False: failed), else to what the recorded
        gates say (:func:`spex.records.gate.verdict`: failed if any failed, else undecided if any is
        undecided); with neither and no gates both stay ``None`` (nothing was gated)."""
        if verdict is not None and verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}; got {verdict!r}")
        if verdict is None and passed is not None:
            verdict = "passed" if passed else "failed"

        def work(session: Session) -> bool | None:
            chosen = verdict
            if chosen is None:
                gates = session.execute(sa.select(GateResult).where(GateResult.audit_id == audit_id)).scalars().all()
                chosen = gate_verdict([g.to_gate() for g in gates]) if gates else None
            outcome = None if chosen is None else chosen == "passed"
            self._update_audit(session, audit_id, {"status": "succeeded", "passed": outcome, "verdict": chosen,
                                                   "finished_at": utcnow(), "error": None})
            return outcome

        return self._run(work)

    def fail_audit(self, audit_id: str, error: str | BaseException) -> bool:
        """Mark the audit ``failed`` with ``error`` (passwords masked). Returns False when no such
        audit exists: it is called on error paths and must not hide the original error."""
        text = format_error(error)
        try:
            self._run(
                lambda s: self._update_audit(
                    s, audit_id,
                    {"status": "failed", "passed": False, "verdict": "failed", "finished_at": utcnow(), "error": text},
                )
            )
        except AuditNotFound:
            return False
        except sa.exc.SQLAlchemyError as exc:  # the DB itself is the problem: log, keep the original error
            log.error("could not mark audit %s failed: %s", audit_id, mask_secrets(oneline(exc)))
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
