"""Reading audits back: one audit with everything under it, lists, interaction tables, and one
subject's top interactions across a model's versions. Returns plain dataclasses
(``spex.records.metadata.records``), never ORM objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from spex.records.metadata.errors import AuditNotFound, SubjectNotFound
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
)
from spex.records.metadata.records import (
    AblationSetRecord,
    AuditRecord,
    AuditSubjectRecord,
    AuditSummary,
    ModelVersionRecord,
    ProxyRecord,
    SubjectRecord,
    ValidationRecord,
)
from spex.records.metadata.sessions import Sessions
from spex.records.metadata.writes import INTERVAL_FIELDS


class Reads(Sessions):
    """The store's reads (each one short transaction; nothing is locked)."""

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
                    verdict=_verdict(a),
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
                verdict=_verdict(audit),
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
                gates=tuple(g.to_gate() for g in gates),
            )

        return self._run(work)

    def get_interactions(self, audit_id: str, subject_id: int, *, index: str | None = None) -> pd.DataFrame:
        """The ranked interactions an audit recorded for a subject, as spex's interaction table.

        Columns ``members`` (tuple), ``labels`` (tuple or None), ``order``, ``value``, ``rank``, and
        the value's ``se``, ``ci_low``, ``ci_high`` (NaN where unknown, and for rows recorded before
        these were); ``attrs["index"]`` names the index. With several indices recorded, pass ``index``.
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
        ``started_at``, ``rank``, ``members``, ``labels``, ``order``, ``value``, ``se``, ``ci_low``,
        ``ci_high`` (NaN: unknown); versions in the order
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
            columns = ["model_revision", "registry_version", "audit_id", "started_at", "rank", "members", "labels", "order",
                       "value", *INTERVAL_FIELDS]
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
                    **{key: _nan(getattr(r, key)) for key in INTERVAL_FIELDS},
                }
                for audit_id, started_at, revision, registry_version in chosen_audits
                for r in by_audit.get(audit_id, [])
            ]
            # object columns: keep None as None (pandas would infer a string dtype with NaN)
            out = pd.DataFrame(
                {
                    column: pd.Series(
                        [r[column] for r in records],
                        dtype={"rank": "int64", "order": "int64", "value": "float64",
                               **dict.fromkeys(INTERVAL_FIELDS, "float64")}.get(column, object),
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


def _verdict(a: Audit) -> str | None:
    """The audit's verdict; for a row that has none, what ``passed`` says (None stays None)."""
    if a.verdict is not None or a.passed is None:
        return a.verdict
    return "passed" if a.passed else "failed"


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _frame(rows: Sequence[Interaction], index: str | None) -> pd.DataFrame:
    has_labels = any(r.labels is not None for r in rows)
    data: dict[str, list[Any]] = {"members": [tuple(r.members) for r in rows]}
    if has_labels:
        data["labels"] = [tuple(r.labels) if r.labels is not None else None for r in rows]
    data["order"] = [r.order for r in rows]
    data["value"] = [r.value for r in rows]
    data["rank"] = [r.rank for r in rows]
    # unknown (and rows recorded before revision 0002) read back as NaN, as Explanation.interactions() has it
    for key in INTERVAL_FIELDS:
        data[key] = [_nan(getattr(r, key)) for r in rows]
    frame = pd.DataFrame(data)
    frame = frame.astype({"order": int, "value": float, "rank": int, **{key: float for key in INTERVAL_FIELDS}})
    frame.attrs["index"] = index
    return frame
