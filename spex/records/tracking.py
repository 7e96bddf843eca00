"""Everything an audit produces, logged to MLflow — the dashboards people look at.

Layout: one experiment per audited model (``spex/<model name>``), one parent run per audit, one
nested run per subject (``mlflow.parentRunId``). A subject run carries the ablation sets (Parquet
artifact + MLflow dataset input), the LightGBM proxy (an MLflow LoggedModel of the ``lightgbm``
flavor), the ranked interactions (an MLflow table, shown in the UI's artifact/evaluation views),
metrics (R², calls, seconds per stage, throughput), figures and the HTML report.

Why it is written the way it is:

* **Explicit run ids through one** ``MlflowClient``, never ``mlflow.start_run``: MLflow's active
  run and its global tracking URI are per-thread/per-process state, and pipeline stages run on worker
  threads and in other processes. For the same reason the proxy is not logged with
  ``mlflow.lightgbm.log_model`` (which reads the global tracking URI and active run): the same
  steps — create the LoggedModel, link it as the run's output, save the flavor, upload, finalize —
  are done here with this tracker's client.
* **Idempotent**: runs are found again by their ``spex.audit_id`` / ``spex.subject`` tags, tables are
  replaced instead of appended (``log_table`` appends), the proxy reuses its LoggedModel. Re-recording
  an audit after a retry leaves one parent run, one run per subject.
* Nothing here talks to the metadata DB: methods return the ids/URIs/digests the caller stores with
  ``spex.records.metadata`` (``attach_mlflow``, ``record_subject(mlflow_run_id=)``, ``record_proxy(mlflow_model_uri=)``,
  ``record_ablation_set(location=, sha256=, mlflow_dataset_digest=)``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import posixpath
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import mlflow.data
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import (
    DatasetInput,
    InputTag,
    LoggedModelOutput,
    LoggedModelStatus,
    Metric,
    Param,
    RunTag,
)
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import (
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
)

from spex import settings
from spex.content import hasher
from spex.engine import maskbits
from spex.records import verdicts

EXPERIMENT_PREFIX = "spex/"
TAG_AUDIT_ID = "spex.audit_id"
TAG_KIND = "spex.kind"  # "audit" | "subject"
TAG_SUBJECT = "spex.subject"
TAG_MODEL = "spex.model"
TAG_MODEL_REVISION = "spex.model_revision"
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"
TAG_PROXY_PREFIX = "spex.proxy_model_id."
# Above this many features the ablation Parquet holds one packed-hex mask column instead of one bool
# column per feature: MLflow stores a dataset's schema in a column limited to ~1 MB.
WIDE_LAYOUT_MAX_FEATURES = 2048
INTERVAL_COLUMNS = ("se", "ci_low", "ci_high")
_PARAM_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")


@dataclass(frozen=True)
class AblationArtifact:
    """Where an ablation set went in MLflow, and how to verify it (store these in the metadata DB)."""

    artifact_uri: str  # the Parquet file
    artifact_path: str  # relative to the run's artifact root
    size_bytes: int
    sha256: str  # of the Parquet file
    dataset_digest: str  # content digest of (masks, values), the MLflow dataset's digest
    dataset_name: str
    count: int
    n_features: int


def _is_local_store(uri: str) -> bool:
    return urlparse(uri).scheme in ("", "file", "sqlite")


TRACKING_SETTING = "MLFLOW_TRACKING_URI / --tracking-uri"
SERVER_PROBE_TIMEOUT_S = 10.0


def check_store(uri: str) -> None:
    """The tracking store at ``uri`` answers, or a one-line :class:`SpexInputError` naming the setting.

    A server is asked once, with a short timeout and no retries (MLflow's client retries a refused
    connection for minutes); any HTTP answer, even 401, means it is up. A local store is opened, which
    creates and migrates it on first use (callers hold the data dir's set-up lock)."""
    from spex.errors import SpexInputError
    from spex.records.metadata.db import mask_secrets

    shown = mask_secrets(uri)
    if urlparse(uri).scheme in ("http", "https"):
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=SERVER_PROBE_TIMEOUT_S).close()
        except urllib.error.HTTPError:
            return
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise SpexInputError(f"the MLflow tracking server at {shown} does not answer ({mask_secrets(str(reason))}); "
                                 f"fix: start it, or point {TRACKING_SETTING} at one that is up") from None
        return
    if not _is_local_store(uri):
        return  # databricks, ...: MLflow's own client reports on first use
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001  (MLflow and SQLAlchemy raise many kinds here)
        text = str(getattr(exc, "orig", None) or getattr(exc, "message", None) or exc).strip().splitlines()
        raise SpexInputError(f"the MLflow store at {shown} cannot be opened ({mask_secrets(text[0]) if text else type(exc).__name__}); "
                             f"fix: point {TRACKING_SETTING} at a writable store, or unset it for the one in the data dir") from None


def flatten_params(params: Mapping[str, Any], *, prefix: str = "", sep: str = ".") -> dict[str, str]:
    """Nested mappings as ``a.b.c`` keys with string values MLflow accepts (lists as JSON, long
    values truncated to MLflow's limit with a marker, keys sanitized)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = _PARAM_KEY_BAD.sub("_", f"{prefix}{key}")[:250]
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, prefix=f"{name}{sep}", sep=sep))
            continue
        if isinstance(value, (np.generic,)):
            value = value.item()
        if isinstance(value, str):
            text = value
        elif value is None or isinstance(value, (bool, int, float)):
            text = json.dumps(value)
        else:
            text = json.dumps(value, default=repr, sort_keys=True)
        if len(text) > MAX_PARAM_VAL_LENGTH:
            marker = "...[truncated]"
            text = text[: MAX_PARAM_VAL_LENGTH - len(marker)] + marker
        flat[name] = text
    return flat


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def interactions_for_ui(table: pd.DataFrame) -> pd.DataFrame:
    """The interaction table as MLflow's table viewer shows it best: one readable string per set, and the
    value's ``se``/``ci_low``/``ci_high`` where the table has them (NaN, null in the JSON: unknown)."""
    out = pd.DataFrame(
        {
            "rank": table["rank"].astype(int) if "rank" in table else np.arange(1, len(table) + 1),
            "members": [", ".join(str(int(m)) for m in members) for members in table["members"]],
        }
    )
    if "labels" in table:
        out["labels"] = [" × ".join(str(x) for x in labels) if labels is not None else None for labels in table["labels"]]
    out["order"] = table["order"].astype(int) if "order" in table else [len(m) for m in table["members"]]
    out["value"] = table["value"].astype(float)
    for key in INTERVAL_COLUMNS:  # the value's standard error and interval (NaN, null in the JSON: unknown)
        if key in table:
            out[key] = pd.to_numeric(table[key], errors="coerce").astype(float)
    return out


def ablation_frame(masks: np.ndarray, values: np.ndarray) -> tuple[pd.DataFrame, str]:
    """(masks, values) as a DataFrame and its layout name.

    ``wide``: bool columns ``f0..f{n-1}`` plus ``value`` (readable, pandas/SQL friendly).
    ``packed``: a ``mask`` column of hex strings (``np.packbits``, feature 0 = most significant bit
    of the first byte) plus ``value``, used above ``WIDE_LAYOUT_MAX_FEATURES`` features.
    """
    masks = np.asarray(masks, dtype=bool)
    values = np.asarray(values, dtype=np.float64)
    if masks.ndim != 2 or values.shape != (masks.shape[0],):
        raise ValueError(f"masks must be (B, n) and values (B,), got {masks.shape} and {values.shape}")
    n = masks.shape[1]
    if n <= WIDE_LAYOUT_MAX_FEATURES:
        frame = pd.DataFrame(masks, columns=[f"f{i}" for i in range(n)])
        frame["value"] = values
        return frame, "wide"
    packed = maskbits.pack(masks)
    return pd.DataFrame({"mask": [row.tobytes().hex() for row in packed], "value": values}), "packed"


def ablation_digest(masks: np.ndarray, values: np.ndarray) -> str:
    """Content digest of an ablation set (independent of file format and library versions)."""
    masks = np.asarray(masks, dtype=bool)
    h = hasher()
    h.update(np.asarray(masks.shape, dtype=np.int64).tobytes())
    h.update(maskbits.pack(masks).tobytes())
    h.update(np.ascontiguousarray(values, dtype="<f8").tobytes())
    return h.hexdigest()


class AuditTracker:
    """Logs audits to MLflow through one explicit client.

    ``tracking_uri`` defaults to ``MLFLOW_TRACKING_URI`` or the embedded SQLite store in the data
    dir. For local stores, experiments get an artifact location under ``artifact_root`` (default:
    ``<data dir>/mlartifacts``) instead of MLflow's cwd-relative default; against a server, the
    server decides (e.g. ``mlflow-artifacts:/`` with ``--serve-artifacts``).
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        registry_uri: str | None = None,
        artifact_root: str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri or settings.mlflow_tracking_uri()
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=registry_uri)
        if artifact_root is None and _is_local_store(self.tracking_uri):
            artifact_root = settings.mlflow_artifact_root()
        self.artifact_root = artifact_root.rstrip("/") if artifact_root else None

    def __repr__(self) -> str:
        from spex.records.metadata.db import mask_secrets

        return f"AuditTracker({mask_secrets(self.tracking_uri)!r})"

    # ------------------------------------------------------------------ experiments and runs

    def experiment_id(self, model_name: str) -> str:
        """The experiment of ``model_name`` (created on first use; safe when processes race)."""
        name = EXPERIMENT_PREFIX + model_name
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.artifact_root:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name).strip("_") or "model"
            location = f"{self.artifact_root}/{slug}"
        try:
            return self.client.create_experiment(name, artifact_location=location, tags={TAG_MODEL: model_name})
        except MlflowException:
            found = self.client.get_experiment_by_name(name)  # another process created it first
            if found is None:
                raise
            return found.experiment_id

    def _find_run(self, experiment_id: str, **tags: str) -> str | None:
        clauses = " and ".join(f"tags.`{k}` = '{v.replace(chr(39), '')}'" for k, v in tags.items())
        runs = self.client.search_runs([experiment_id], filter_string=clauses, max_results=1, order_by=["attributes.start_time ASC"])
        return runs[0].info.run_id if runs else None

    def start_audit_run(
        self,
        audit_id: str,
        model_name: str,
        *,
        spec: Mapping[str, Any] | None = None,
        model_revision: str | None = None,
        registry_version: str | None = None,
        tags: Mapping[str, str] | None = None,
        run_name: str | None = None,
    ) -> str:
        """The audit's parent run (found again by its audit id when re-recorded); logs ``spec`` as params."""
        experiment_id = self.experiment_id(model_name)
        run_tags = {TAG_AUDIT_ID: audit_id, TAG_KIND: "audit", TAG_MODEL: model_name}
        if model_revision:
            run_tags[TAG_MODEL_REVISION] = model_revision
        if registry_version:
            run_tags["spex.registry_version"] = str(registry_version)
        run_tags.update({k: str(v) for k, v in (tags or {}).items()})
        run_id = self._find_run(experiment_id, **{TAG_AUDIT_ID: audit_id, TAG_KIND: "audit"})
        if run_id is None:
            run = self.client.create_run(
                experiment_id, run_name=run_name or f"audit-{audit_id[:12]}", tags=run_tags
            )
            run_id = run.info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
            self._set_tags(run_id, run_tags)
        if spec:
            self.log_params(run_id, spec)
        return run_id

    def start_subject_run(
        self,
        audit_run_id: str,
        subject: str,
        *,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        """A nested run for one subject under the audit's run (found again when re-recorded)."""
        parent = self.client.get_run(audit_run_id)
        audit_id = parent.data.tags.get(TAG_AUDIT_ID, "")
        experiment_id = parent.info.experiment_id
        run_tags = {TAG_PARENT: audit_run_id, TAG_AUDIT_ID: audit_id, TAG_KIND: "subject", TAG_SUBJECT: subject}
        for key in (TAG_MODEL, TAG_MODEL_REVISION):
            if key in parent.data.tags:
                run_tags[key] = parent.data.tags[key]
        run_tags.update({k: str(v) for k, v in (tags or {}).items()})
        run_id = self._find_run(experiment_id, **{TAG_PARENT: audit_run_id, TAG_SUBJECT: subject})
        if run_id is None:
            run_id = self.client.create_run(experiment_id, run_name=f"subject-{subject}"[:250], tags=run_tags).info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
            self._set_tags(run_id, run_tags)
        if params:
            self.log_params(run_id, params)
        return run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Close a run: ``FINISHED``, ``FAILED`` or ``KILLED``."""
        self.client.set_terminated(run_id, status=status)

    # ------------------------------------------------------------------ params, metrics, tags

    def _set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=list(chunk), synchronous=True)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set run tags (stringified)."""
        self._set_tags(run_id, {k: str(v) for k, v in tags.items()})

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> dict[str, str]:
        """Log (nested) params flattened to ``a.b.c`` keys; params already on the run are skipped.

        MLflow params are immutable: a re-recorded audit with a *different* value raises ValueError
        rather than silently keeping the old one.
        """
        flat = flatten_params(params)
        existing = self.client.get_run(run_id).data.params
        changed = {k: (existing[k], v) for k, v in flat.items() if k in existing and existing[k] != v}
        if changed:
            first = next(iter(changed))
            raise ValueError(
                f"run {run_id} already has param {first}={changed[first][0]!r}, now {changed[first][1]!r}: "
                "a different spec needs a new audit id"
            )
        todo = [Param(k, v) for k, v in flat.items() if k not in existing]
        for chunk in _chunks(todo, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, params=list(chunk), synchronous=True)
        return flat

    def log_metrics(self, run_id: str, metrics: Mapping[str, float | int | None], *, step: int = 0) -> None:
        """Log numeric metrics (``None`` skipped) in batches."""
        timestamp = int(pd.Timestamp.now(tz="UTC").timestamp() * 1000)
        items = [
            Metric(key=_PARAM_KEY_BAD.sub("_", k), value=float(v), timestamp=timestamp, step=step)
            for k, v in metrics.items()
            if v is not None
        ]
        for chunk in _chunks(items, 1000):
            self.client.log_batch(run_id, metrics=list(chunk), synchronous=True)

    def log_stage_metrics(
        self, run_id: str, seconds: Mapping[str, float], *, calls: int | None = None, step: int = 0
    ) -> dict[str, float]:
        """Seconds per stage (``seconds/<stage>``, ``seconds/total``), model ``calls`` and the
        throughput (calls per second of the ``ablate`` stage, else of the total)."""
        metrics: dict[str, float] = {f"seconds/{stage}": float(s) for stage, s in seconds.items()}
        total = float(sum(seconds.values()))
        metrics["seconds/total"] = total
        if calls is not None:
            metrics["calls"] = float(calls)
            denominator = float(seconds.get("ablate", total))
            if denominator > 0:
                metrics["throughput/calls_per_s"] = calls / denominator
        self.log_metrics(run_id, metrics, step=step)
        return metrics

    # ------------------------------------------------------------------ artifacts

    def _artifact_uri(self, run_id: str, artifact_path: str) -> str:
        return posixpath.join(self.client.get_run(run_id).info.artifact_uri, artifact_path)

    def _artifact_exists(self, run_id: str, artifact_path: str) -> bool:
        parent = posixpath.dirname(artifact_path) or None
        return any(f.path == artifact_path for f in self.client.list_artifacts(run_id, parent))

    def _dataset_source(self, uri: str) -> Any:
        """An MLflow dataset source for an artifact URI (``mlflow-artifacts:`` has no resolver: it is
        turned into the server's HTTP download URL)."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.http_dataset_source import HTTPDatasetSource

        parsed = urlparse(uri)
        if parsed.scheme == "mlflow-artifacts":
            base = urlparse(self.tracking_uri)
            if base.scheme in ("http", "https"):
                netloc = parsed.netloc or base.netloc
                return HTTPDatasetSource(
                    f"{base.scheme}://{netloc}/api/2.0/mlflow-artifacts/artifacts/{parsed.path.lstrip('/')}"
                )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return resolve_dataset_source(uri)
            except MlflowException:
                return HTTPDatasetSource(uri)

    def log_ablation_set(
        self,
        run_id: str,
        masks: np.ndarray,
        values: np.ndarray,
        *,
        fingerprint: str,
        role: str = "train",
        labels: Sequence[str] | None = None,
    ) -> AblationArtifact:
        """Log (masks, values) as ``ablation/<role>.parquet`` and as an MLflow dataset input
        (context = ``role``); returns what the metadata DB stores about it."""
        frame, layout = ablation_frame(masks, values)
        digest = ablation_digest(masks, values)
        n = int(np.asarray(masks).shape[1])
        artifact_path = f"ablation/{role}.parquet"
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = table.replace_schema_metadata(
            {
                **(table.schema.metadata or {}),
                b"spex.fingerprint": fingerprint.encode(),
                b"spex.role": role.encode(),
                b"spex.layout": layout.encode(),
                b"spex.n_features": str(n).encode(),
                b"spex.labels": json.dumps(list(labels) if labels is not None else None).encode(),
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{role}.parquet"
            pq.write_table(table, path, compression="zstd")
            data = path.read_bytes()
            self.client.log_artifact(run_id, str(path), artifact_path="ablation")
        uri = self._artifact_uri(run_id, artifact_path)
        name = f"{role}-{fingerprint[:16]}"
        dataset = mlflow.data.from_pandas(frame, source=self._dataset_source(uri), targets="value", name=name, digest=digest)
        self.client.log_inputs(
            run_id,
            datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", role)])],
        )
        return AblationArtifact(
            artifact_uri=uri,
            artifact_path=artifact_path,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            dataset_digest=digest,
            dataset_name=name,
            count=len(frame),
            n_features=n,
        )

    def log_proxy(
        self,
        run_id: str,
        booster: Any,
        *,
        name: str = "proxy",
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Log a LightGBM ``Booster`` as an MLflow model (``lightgbm`` flavor, pyfunc-loadable) linked
        to the run as its output; returns its URI (``models:/<model id>``).

        The model's input is a float matrix (B, n) of masks (1 = keep). A re-recorded subject run
        reuses its LoggedModel instead of adding another.
        """
        import lightgbm
        import mlflow.lightgbm
        from mlflow.models import Model, ModelSignature
        from mlflow.types import Schema, TensorSpec

        run = self.client.get_run(run_id)
        tag_key = TAG_PROXY_PREFIX + name
        model = None
        if tag_key in run.data.tags:
            try:
                model = self.client.get_logged_model(run.data.tags[tag_key])
            except MlflowException:
                model = None
        if model is None:
            flat = flatten_params(params or {})
            model = self.client.create_logged_model(
                experiment_id=run.info.experiment_id,
                name=name,
                source_run_id=run_id,
                params=flat or None,
                tags={**{k: str(v) for k, v in (tags or {}).items()}, TAG_AUDIT_ID: run.data.tags.get(TAG_AUDIT_ID, "")},
                model_type="spex-proxy",
            )
            self.client.log_outputs(run_id, models=[LoggedModelOutput(model.model_id, step=0)])
            self._set_tags(run_id, {tag_key: model.model_id})
        n = int(booster.num_feature())
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float64), (-1, n))]),
            outputs=Schema([TensorSpec(np.dtype(np.float64), (-1,))]),
        )
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "model"
            mlflow_model = Model(
                artifact_path=model.artifact_location, model_uuid=model.model_id, run_id=run_id, model_id=model.model_id
            )
            mlflow.lightgbm.save_model(
                booster,
                path=str(local),
                mlflow_model=mlflow_model,
                signature=signature,
                # Explicit: inferring requirements would load the model in a subprocess (seconds).
                pip_requirements=[f"lightgbm=={lightgbm.__version__}", f"numpy=={np.__version__}"],
            )
            self.client.log_model_artifacts(model.model_id, str(local))
        self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        return f"models:/{model.model_id}"

    def log_interactions(self, run_id: str, table: pd.DataFrame, *, index: str | None = None) -> str:
        """Log the ranked interactions as an MLflow table ``interactions/<index>.json`` (replacing an
        earlier one: ``log_table`` alone would append); returns the artifact path."""
        index = index or table.attrs.get("index") or "interactions"
        artifact_file = f"interactions/{index}.json"
        data = interactions_for_ui(table)
        if not self._artifact_exists(run_id, artifact_file):
            self.client.log_table(run_id, data=data, artifact_file=artifact_file)
        else:  # same format as log_table writes; the run already carries its "table" tag
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / posixpath.basename(artifact_file)
                data.to_json(path, orient="split", index=False, date_format="iso")
                self.client.log_artifact(run_id, str(path), artifact_path=posixpath.dirname(artifact_file))
        top = data.iloc[0] if len(data) else None
        if top is not None and math.isfinite(float(top["value"])):
            self.log_metrics(run_id, {f"interactions/{index}/count": len(data), f"interactions/{index}/top_abs_value": abs(float(top["value"]))})
        return artifact_file

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        """Log a matplotlib/plotly figure (e.g. ``figures/spectrum.png``)."""
        self.client.log_figure(run_id, figure, artifact_file)

    def log_report(self, run_id: str, path: str | Path, *, artifact_path: str = "report") -> str:
        """Log the audit's HTML report (or any file); returns its artifact URI."""
        path = Path(path)
        self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)
        return self._artifact_uri(run_id, f"{artifact_path}/{path.name}")

    def log_artifact(self, run_id: str, path: str | Path, *, artifact_path: str | None = None) -> None:
        """Log any local file or directory."""
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path=artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)

    # ------------------------------------------------------------------ model registry

    def tag_model_version(
        self,
        name: str,
        version: str | int,
        *,
        audit_id: str,
        status: str,
        faithfulness: float | None = None,
        passed: bool | None = None,
        run_id: str | None = None,
        spec: str | None = None,
        lens: str | None = None,
        verdict: str | None = None,
        started: dt.datetime | None = None,
    ) -> dict[str, str]:
        """Put the audit's outcome on the audited MLflow registry model version (what release tooling
        reads); returns the tags set.

        Per spec (``spec``: its name; unnamed specs are keyed by ``lens``) the tags
        ``spex.spec.<key>.verdict`` (passed / failed / undecided), ``.audit_id``, ``.time`` (now, UTC),
        ``.started`` (the audit's start), ``.status``, ``.faithfulness``, ``.run_id``, ``.name``; then the
        aggregate ``spex.passed``, recomputed from every spec's tags read back from the registry (see
        :mod:`spex.records.verdicts`). ``verdict`` defaults to ``passed``'s (a ``failed`` status: failed).
        Besides, the last audit to publish is named by ``spex.audit_id``, ``spex.audit_status``,
        ``spex.faithfulness`` (min held-out R²) and ``spex.audit_run_id``.
        """
        if verdict is None:
            verdict = "failed" if status == "failed" else None if passed is None else "passed" if passed else "failed"
        if verdict is not None and verdict not in verdicts.VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(verdicts.VERDICTS)}; got {verdict!r}")
        version = str(version)
        tags = {"spex.audit_id": audit_id, "spex.audit_status": status}
        if faithfulness is not None:
            tags["spex.faithfulness"] = f"{float(faithfulness):.6g}"
        if run_id is not None:
            tags["spex.audit_run_id"] = run_id
        if verdict is not None:
            key = verdicts.spec_key(spec, lens)
            current = self.client.get_model_version(name, version).tags
            if verdicts.supersedes(current, key, audit_id, started):
                own = {"verdict": verdict, "audit_id": audit_id, "time": verdicts.iso(dt.datetime.now(dt.timezone.utc)),
                       "status": status, "name": spec or (f"(unnamed {lens} spec)" if lens else "(unnamed spec)")}
                if started is not None:
                    own["started"] = verdicts.iso(started)
                if faithfulness is not None:
                    own["faithfulness"] = tags["spex.faithfulness"]
                if run_id is not None:
                    own["run_id"] = run_id
                tags |= {verdicts.tag(key, field): value for field, value in own.items()}
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, value)
        if verdict is not None:
            tags[verdicts.TAG_PASSED] = self._settle_passed(name, version)
        return tags

    def _settle_passed(self, name: str, version: str, attempts: int = 8) -> str:
        """Recompute ``spex.passed`` from the spec verdicts on the version until a read-back agrees.

        Two audits publishing at once each write their own spec's tags, then the aggregate from what they
        read. Checking after writing makes the last writer see every verdict written before its check, so
        a pass computed before another spec's failure landed is corrected, not left standing."""
        value = None
        for _ in range(attempts):
            tags = self.client.get_model_version(name, version).tags
            passed = verdicts.aggregate(tags)
            value = "false" if passed is None else str(passed).lower()
            if tags.get(verdicts.TAG_PASSED) == value:
                return value
            self.client.set_model_version_tag(name, version, verdicts.TAG_PASSED, value)
        return value or "false"
