"""Everything an audit produces, logged to MLflow — the dashboards people look at.

Layout: one experiment per audited model (``spex/<model name>``), one parent run per audit, one
nested run per subject (``mlflow.parentRunId``). A subject run carries the ablation sets (Parquet
artifact + MLflow dataset input), the LightGBM proxy (an MLflow LoggedModel of the ``lightgbm``
flavor), the ranked interactions (an MLflow table, shown in the UI's artifact/evaluation views),
metrics (R², calls, seconds per stage, throughput) and figures (``figures/*.png``); the audit run
carries the HTML report and, for a release, the candidate-vs-baseline figures.

Besides, for registry models, one experiment ``spex-drift/<model>`` with one long-lived run per
(spec, subject): the top interactions' values, faithfulness and the verdict as metrics whose *step is
the model version*, so MLflow's metric charts draw each one's line across versions
(:meth:`AuditTracker.log_drift`; ``docs/dashboards.md`` says why this layout).

Every experiment spex creates carries ``mlflow.experimentKind = custom_model_development`` (the classic
runs view), and every UI address spex prints or writes carries ``?workflowType=machine_learning``:
MLflow 3.17.2's UI picks the page from its GenAI / Model-training toggle (default GenAI: an empty
traces overview), which that query sets (see ``UI_MODE``). Runs carry a name and a description
(``mlflow.note.content``, markdown) that say what they are.

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
    MAX_ENTITY_KEY_LENGTH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from spex import settings
from spex.content import content_hash, hasher
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
TAG_REGISTRY_NAME = "spex.registry_name"
TAG_REGISTRY_VERSION = "spex.registry_version"
TAG_SPEC_NAME = "spex.spec_name"  # the spec's name as written ("(unnamed heads spec)" without one)
TAG_SPEC_KEY = "spex.spec_key"  # spex.records.verdicts.spec_key: the registry's per-spec tag key part
TAG_LENS = "spex.lens"
TAG_VERDICT = "spex.verdict"
TAG_DRIFT_KEY = "spex.drift_key"  # digest of (model, spec key, subject): finds a drift run again
TAG_NOTE = "mlflow.note.content"  # the run's / experiment's description (markdown) in the UI
# The experiment kind MLflow's UI reads: `custom_model_development` is the classic runs view (the bundle's
# experiment page: `let tab = Runs; if (kind === GENAI_DEVELOPMENT) tab = Overview or Traces`) — where the
# UI reads the tag; 3.17.2 reads its toggle instead (UI_MODE below).
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
DRIFT_PREFIX = "spex-drift/"
UI_DEFAULT = "http://127.0.0.1:5000"  # where `mlflow ui --port 5000` serves a local store
# ...but in 3.17.2 the page an experiment opens on follows the UI's GenAI / Model-training toggle, not the
# tag: the bundle's `useExperimentKind` returns the kind of the `workflowType` (the URL's `?workflowType=`,
# else the toggle's last choice in local storage, else `genai`) whenever its feature flag is on, and it
# is (`() => !0`). So every address spex prints or writes carries the Model-training mode.
UI_MODE = "?workflowType=machine_learning"
VERDICT_SCORE = {"passed": 1.0, "undecided": 0.5, "failed": 0.0}
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


# ---------------------------------------------------------------------------------------------- drift metric keys
_LABEL_BAD = re.compile(r"[^A-Za-z0-9-]+")
LABEL_KEY_WIDTH = 24  # characters of one member's label in a metric key


def label_part(label: Any) -> str:
    """A member's label as a metric-key fragment: ASCII letters, digits and ``-``, every other run of
    characters one ``_``, no leading/trailing ``_``, at most ``LABEL_KEY_WIDTH`` characters. Never
    holds ``__`` (the members' separator) nor ``/`` (the key's)."""
    return _LABEL_BAD.sub("_", str(label)).strip("_")[:LABEL_KEY_WIDTH].strip("_")


def interaction_key(index: str, members: Sequence[int], labels: Sequence[Any] | None = None) -> str:
    """The metric-key stem of one interaction: ``<index>/f3_not__f5_bad`` — each member as ``f<id>``
    (its feature index: what makes the key unique) and its sanitised label (to read it), in member
    order, joined by ``__``. The same interaction gets the same key in every version (its members and
    labels are the subject's); two member sets never share a key (the ids decode back, see
    :func:`members_of_key`). Valid for MLflow (alphanumerics, ``_ - . /``); labels are dropped when the
    key would pass MLflow's length limit, leaving ``<index>/f3__f5``. The empty set is ``empty``."""
    stem = _LABEL_BAD.sub("_", str(index)).strip("_") or "index"
    pairs = sorted(zip((int(m) for m in members), labels if labels is not None else [None] * len(members)))
    if not pairs:
        return f"{stem}/empty"
    parts = [f"f{m}_{label_part(lab)}".rstrip("_") if lab is not None and label_part(lab) != f"f{m}" else f"f{m}"
             for m, lab in pairs]  # a redacted subject's labels are f0, f1, ...: not repeated
    key = f"{stem}/{'__'.join(parts)}"
    longest_suffix = len("/ci_high")
    if len(key) + longest_suffix > MAX_ENTITY_KEY_LENGTH:
        key = f"{stem}/{'__'.join(f'f{m}' for m, _ in pairs)}"
    if len(key) + longest_suffix > MAX_ENTITY_KEY_LENGTH:  # dozens of members: a digest of them
        key = f"{stem[:32]}/set-{content_hash([m for m, _ in pairs])[:24]}"
    return key


_MEMBER = re.compile(r"^f(\d+)(?:_|$)")


def members_of_key(key: str) -> tuple[int, ...]:
    """The member ids encoded in an interaction key (the inverse of :func:`interaction_key`'s ids; a
    ``set-<digest>`` key of dozens of members does not decode)."""
    body = key.split("/")[1] if "/" in key else key
    if body == "empty":
        return ()
    out = []
    for part in body.split("__"):
        match = _MEMBER.match(part)
        if match is None:
            raise ValueError(f"not an interaction key: {key!r}")
        out.append(int(match[1]))
    return tuple(out)


def drift_key(model: str, spec_key: str, subject: str) -> str:
    """The tag value that finds the drift run of (model, spec, subject) again (any characters in them)."""
    return content_hash({"model": model, "spec": spec_key, "subject": subject})[:32]


def _clip(text: str, limit: int) -> str:
    marker = "\n\n…(cut)"
    return text if len(text) <= limit else text[: limit - len(marker)] + marker


# ---------------------------------------------------------------------------------------------- UI addresses
def ui_base(tracking_uri: str | None) -> str:
    """Where the MLflow UI of ``tracking_uri`` is: the server itself, or ``mlflow ui --port 5000``'s
    address for a local store."""
    if tracking_uri and urlparse(tracking_uri).scheme in ("http", "https"):
        from spex.records.metadata.db import mask_secrets

        return mask_secrets(tracking_uri).rstrip("/")
    return UI_DEFAULT


def _route(base: str, path: str) -> str:
    """``<base>/#/<path>?workflowType=machine_learning``; with no base the link is relative to the page
    (``#/<path>…``: the UI's own hash routes, wherever it is served — what the descriptions shown inside
    the UI use). The query selects the UI's "Model training" mode (see ``UI_MODE``)."""
    return (f"{base}/#/{path}" if base else f"#/{path}") + UI_MODE


def experiments_url(base: str) -> str:
    """The list of experiments."""
    return _route(base, "experiments")


def experiment_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table."""
    return _route(base, f"experiments/{experiment_id}/runs")


def run_url(base: str, experiment_id: str, run_id: str, tab: str | None = None) -> str:
    """A run's page; ``tab``: ``model-metrics`` (its metric charts), ``artifacts`` or ``artifacts/<path>``
    (the artifact browser with that file open) — the routes MLflow 3.17's UI serves."""
    return _route(base, f"experiments/{experiment_id}/runs/{run_id}" + (f"/{tab}" if tab else ""))


def metric_charts_url(base: str, experiment_id: str, run_id: str) -> str:
    """A run's metric charts (``model-metrics``): for a drift run, each interaction's line across versions."""
    return run_url(base, experiment_id, run_id, "model-metrics")


def model_version_url(base: str, name: str, version: str | int) -> str:
    """A registry model version's page."""
    from urllib.parse import quote

    return _route(base, f"models/{quote(name, safe='')}/versions/{version}")


@dataclass(frozen=True)
class DriftRun:
    """The long-lived run of one (model, spec, subject) whose metrics' steps are model versions."""

    experiment_id: str
    run_id: str
    name: str
    subject: str
    spec: str
    model: str = ""


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
        return self._experiment(EXPERIMENT_PREFIX + model_name, model_name, slug_prefix="", note=(
            f"spex audits of **{model_name}**: one run per audit (its verdict in the name, gates and report "
            "in its description and artifacts), one nested run per subject (figures, interaction tables, "
            "ablation sets, the proxy model). Expand a run's row to see its subjects."))

    def _experiment(self, name: str, model_name: str, *, slug_prefix: str, note: str,
                    tags: Mapping[str, str] | None = None) -> str:
        """The experiment ``name`` (created on first use with its kind, description and ``tags``; safe
        when processes race). An existing experiment without a kind gets spex's, so it opens on its runs;
        one whose kind someone chose keeps it."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if TAG_EXPERIMENT_KIND not in found.tags:
                self.client.set_experiment_tag(found.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
            return found.experiment_id
        location = None
        if self.artifact_root:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name).strip("_") or "model"
            location = f"{self.artifact_root}/{slug_prefix}{slug}"
        all_tags = {TAG_MODEL: model_name, TAG_EXPERIMENT_KIND: EXPERIMENT_KIND, TAG_NOTE: note, **(tags or {})}
        try:
            experiment_id = self.client.create_experiment(name, artifact_location=location, tags=all_tags)
        except MlflowException:
            found = self.client.get_experiment_by_name(name)  # another process created it first
            if found is None:
                raise
            return found.experiment_id
        # The description shows on every page of the experiment, the GenAI overview too: link the runs.
        self.client.set_experiment_tag(experiment_id, TAG_NOTE, f"{note}\n\n[Open the runs]"
                                       f"({experiment_url('', experiment_id)}) (the UI's **Model training** mode).")
        return experiment_id

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
            run_tags[TAG_REGISTRY_VERSION] = str(registry_version)
        run_tags.update({k: str(v) for k, v in (tags or {}).items()})
        run_id = self._find_run(experiment_id, **{TAG_AUDIT_ID: audit_id, TAG_KIND: "audit"})
        if run_id is None:
            run = self.client.create_run(
                experiment_id, run_name=run_name or f"audit-{audit_id[:12]}", tags=run_tags
            )
            run_id = run.info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING", name=run_name)
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
        run_name: str | None = None,
    ) -> str:
        """A nested run for one subject under the audit's run (found again when re-recorded). It inherits
        the audit run's model, version, spec and lens tags; its default name is ``<subject> · vN · <spec>``
        (the model is the experiment's)."""
        parent = self.client.get_run(audit_run_id)
        audit_id = parent.data.tags.get(TAG_AUDIT_ID, "")
        experiment_id = parent.info.experiment_id
        run_tags = {TAG_PARENT: audit_run_id, TAG_AUDIT_ID: audit_id, TAG_KIND: "subject", TAG_SUBJECT: subject}
        for key in (TAG_MODEL, TAG_MODEL_REVISION, TAG_REGISTRY_NAME, TAG_REGISTRY_VERSION, TAG_SPEC_NAME,
                    TAG_SPEC_KEY, TAG_LENS, "spex.audit_kind"):
            if key in parent.data.tags:
                run_tags[key] = parent.data.tags[key]
        run_tags.update({k: str(v) for k, v in (tags or {}).items()})
        if run_name is None:
            version = parent.data.tags.get(TAG_REGISTRY_VERSION)
            spec = parent.data.tags.get(TAG_SPEC_NAME)
            run_name = " · ".join([subject] + ([f"v{version}"] if version else []) + ([spec] if spec else []))
        run_name = run_name[:250]
        run_id = self._find_run(experiment_id, **{TAG_PARENT: audit_run_id, TAG_SUBJECT: subject})
        if run_id is None:
            run_id = self.client.create_run(experiment_id, run_name=run_name, tags=run_tags).info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING", name=run_name)
            self._set_tags(run_id, run_tags)
        if params:
            self.log_params(run_id, params)
        return run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Close a run: ``FINISHED``, ``FAILED`` or ``KILLED``."""
        self.client.set_terminated(run_id, status=status)

    def child_runs(self, run_id: str) -> list[Any]:
        """The nested runs (subjects) of an audit run."""
        parent = self.client.get_run(run_id)
        return self.client.search_runs([parent.info.experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{run_id}'")

    def describe_run(self, run_id: str, markdown: str, *, name: str | None = None) -> None:
        """Set a run's description (``mlflow.note.content``: the markdown the run page shows) and,
        given one, its name."""
        self._set_tags(run_id, {TAG_NOTE: _clip(markdown, MAX_TAG_VAL_LENGTH)})
        if name:
            self.client.update_run(run_id, name=name[:250])

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
                       "status": status, "name": verdicts.display_name(spec, lens)}
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

    # ------------------------------------------------------------------ model version description

    def describe_model_version(self, name: str, version: str | int, attempts: int = 4) -> str:
        """Write the version's verdict table (one row per spec, from its ``spex.spec.<key>.*`` tags, so a
        later spec's audit never erases an earlier spec's row) into its description, below any text
        already there; returns the description. Links are relative to the MLflow UI (``#/...``), so they
        work wherever it is served. Re-checked after writing, like ``spex.passed``: an audit of another
        spec publishing at the same moment ends up in the table."""
        version = str(version)
        text = ""
        for _ in range(attempts):
            mv = self.client.get_model_version(name, version)
            text = self._verdict_description(name, mv.tags, mv.description or "")
            if (mv.description or "") == text:
                break
            self.client.update_model_version(name, version, description=text)
        return text

    def _verdict_description(self, name: str, tags: Mapping[str, str], description: str) -> str:
        kept = description.split(VERDICT_HEADING)[0].rstrip()
        lines = [VERDICT_HEADING, ""]
        passed = tags.get(verdicts.TAG_PASSED)
        if passed is not None:
            lines += [f"`spex.passed`: **{passed}** (true only while every spec's latest verdict passed)", ""]
        lines += ["| spec | verdict | min held-out R² | recorded (UTC) | audit run | report |", "|---|---|---|---|---|---|"]
        experiments: dict[str, str | None] = {}
        for key, v in sorted(verdicts.spec_verdicts(tags).items()):
            field = lambda f, key=key: tags.get(verdicts.tag(key, f))  # noqa: E731
            run_id, run_cell, report_cell = field("run_id"), "–", "–"
            if run_id:
                if run_id not in experiments:
                    try:
                        run = self.client.get_run(run_id)
                        experiments[run_id] = run.info.experiment_id
                        experiments[run_id + ":name"] = run.info.run_name
                    except MlflowException:
                        experiments[run_id] = None
                exp = experiments.get(run_id)
                if exp is not None:
                    label = _md_cell(experiments.get(run_id + ":name") or run_id[:12])
                    run_cell = f"[{label}]({run_url('', exp, run_id)})"
                    report_cell = f"[report.html]({run_url('', exp, run_id, 'artifacts/report/report.html')})"
            when = (field("time") or "")[:16].replace("T", " ") or "–"
            verdict = v.verdict if v.verdict == "passed" else f"**{v.verdict}**"
            lines.append(f"| {_md_cell(field('name') or key)} | {verdict} | {_md_cell(field('faithfulness') or '–')} | "
                         f"{when} | {run_cell} | {report_cell} |")
        drift = self.client.get_experiment_by_name(DRIFT_PREFIX + name)
        if drift is not None:
            lines += ["", f"Interaction drift across the versions of {name}: "
                          f"[{DRIFT_PREFIX}{name}]({experiment_url('', drift.experiment_id)}) "
                          "(open a run's **Model metrics**: one line per interaction, x = model version)"]
        section = "\n".join(lines)
        return f"{kept}\n\n{section}\n" if kept else f"{section}\n"

    # ------------------------------------------------------------------ drift across model versions

    def drift_experiment_id(self, model: str) -> str:
        """The experiment ``spex-drift/<model>`` (created on first use)."""
        return self._experiment(DRIFT_PREFIX + model, model, slug_prefix="drift-", note=(
            f"Interaction drift across the registered versions of **{model}**: one run per (spec, subject), "
            "logged to by every audit of a version; each metric's step is the model version. Open a run's "
            "**Model metrics** tab: each top interaction's value and interval, the held-out R² and the "
            "verdict, as a line over versions."))

    def drift_run(self, model: str, *, spec_key: str, spec_name: str, subject: str, lens: str | None = None) -> DriftRun:
        """The drift run of (model, spec, subject), created on first use and found again by its
        ``spex.drift_key`` tag. When two processes create it at once, the earlier run wins and the
        other is deleted, so every version's points end on one run."""
        experiment_id = self.drift_experiment_id(model)
        key = drift_key(model, spec_key, subject)
        name = f"{spec_name} · {subject}"[:250]
        wanted = {TAG_KIND: "drift", TAG_DRIFT_KEY: key}
        run_id = self._find_run(experiment_id, **wanted)
        if run_id is None:
            tags = {**wanted, TAG_MODEL: model, TAG_SPEC_KEY: spec_key, TAG_SPEC_NAME: spec_name, TAG_SUBJECT: subject}
            if lens:
                tags[TAG_LENS] = lens
            mine = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
            self.client.set_terminated(mine)  # a record, not a job: it is logged to once per audit
            run_id = self._find_run(experiment_id, **wanted) or mine
            if run_id != mine:
                self.client.delete_run(mine)
        return DriftRun(experiment_id, run_id, name, subject, spec_name, model)

    def drift_runs(self, model: str | None = None, *, spec_key: str | None = None,
                   subject: str | None = None) -> list[DriftRun]:
        """The drift runs of ``model`` (every model's when None), optionally of one spec / subject."""
        if model is not None:
            found = self.client.get_experiment_by_name(DRIFT_PREFIX + model)
            experiments = [found] if found is not None else []
        else:
            experiments = self.client.search_experiments(filter_string=f"name LIKE '{DRIFT_PREFIX}%'")
        clauses = [f"tags.`{TAG_KIND}` = 'drift'"]
        if model is not None and spec_key is not None and subject is not None:
            clauses.append(f"tags.`{TAG_DRIFT_KEY}` = '{drift_key(model, spec_key, subject)}'")
        elif spec_key is not None:
            clauses.append(f"tags.`{TAG_SPEC_KEY}` = '{spec_key}'")
        out = []
        for experiment in experiments:
            for run in self.client.search_runs([experiment.experiment_id], filter_string=" and ".join(clauses),
                                               order_by=["attributes.start_time ASC"]):
                tags = run.data.tags
                if subject is not None and tags.get(TAG_SUBJECT) != subject:
                    continue
                out.append(DriftRun(experiment.experiment_id, run.info.run_id, run.info.run_name,
                                    tags.get(TAG_SUBJECT, ""), tags.get(TAG_SPEC_NAME, ""), tags.get(TAG_MODEL, "")))
        return out

    def log_drift(
        self,
        drift: DriftRun,
        *,
        version: int,
        audit_id: str,
        audit_run_id: str,
        index: str,
        ranking: Sequence[Mapping[str, Any]],
        top_k: int,
        heldout_r2: float | None = None,
        heldout_r2_low: float | None = None,
        heldout_r2_high: float | None = None,
        verdict: str | None = None,
    ) -> dict[str, float]:
        """Log one audited version's point on the drift run (every metric at ``step=version``):

        * ``<index>/<members>/value``, ``…/ci_low``, ``…/ci_high`` (keys: :func:`interaction_key`) for the
          ``top_k`` best-ranked interactions, and for every interaction an earlier version put on this
          run that this version recorded too (so a line does not stop where an interaction leaves the top k);
        * ``faithfulness/heldout_r2`` with ``…_low`` / ``…_high`` (its bootstrap interval);
        * ``verdict``: 1 passed, 0.5 undecided, 0 failed.

        Returns what was logged; nothing when this audit already logged this version (a retried publish)
        or when another audit of it measured exactly the same values (a rerun served from the caches): the
        chart keeps one point per version unless a re-audit measured something else. Tags
        ``spex.drift.v<version>.*`` name the audit behind each version's point."""
        run = self.client.get_run(drift.run_id)
        prefix = f"spex.drift.v{int(version)}."
        if run.data.tags.get(prefix + "audit_id") == audit_id:
            return {}
        have = set(run.data.metrics)
        metrics: dict[str, float] = {}
        for position, r in enumerate(sorted(ranking, key=lambda r: int(r.get("rank") or 0))):
            stem = interaction_key(index, r["members"], r.get("labels"))
            if position >= top_k and f"{stem}/value" not in have:
                continue
            metrics[f"{stem}/value"] = float(r["value"])
            for bound in ("ci_low", "ci_high"):
                if r.get(bound) is not None and math.isfinite(float(r[bound])):
                    metrics[f"{stem}/{bound}"] = float(r[bound])
        for key, value in (("heldout_r2", heldout_r2), ("heldout_r2_low", heldout_r2_low),
                           ("heldout_r2_high", heldout_r2_high)):
            if value is not None and math.isfinite(float(value)):
                metrics[f"faithfulness/{key}"] = float(value)
        if verdict in VERDICT_SCORE:
            metrics["verdict"] = VERDICT_SCORE[verdict]
        digest = content_hash(sorted(metrics.items()))[:32]
        same = run.data.tags.get(prefix + "digest") == digest
        if not same:
            self.log_metrics(drift.run_id, metrics, step=int(version))
        audit_run = self.client.get_run(audit_run_id)
        self._set_tags(drift.run_id, {
            prefix + "audit_id": audit_id, prefix + "run_id": audit_run_id, prefix + "digest": digest,
            prefix + "experiment_id": audit_run.info.experiment_id, prefix + "verdict": verdict or "",
            prefix + "run_name": audit_run.info.run_name or "",
            prefix + "time": verdicts.iso(dt.datetime.now(dt.timezone.utc))})
        self.describe_run(drift.run_id, self._drift_note(drift))
        return {} if same else metrics

    def _drift_note(self, drift: DriftRun) -> str:
        tags = self.client.get_run(drift.run_id).data.tags
        versions = sorted({int(m[1]) for k in tags if (m := re.match(r"^spex\.drift\.v(\d+)\.audit_id$", k))})
        model = tags.get(TAG_MODEL, "?")
        lines = [f"**Interaction drift** of subject `{_md_cell(drift.subject)}` under spec `{_md_cell(drift.spec)}` "
                 f"across the registered versions of `{_md_cell(model)}`. Every metric's step is the model version: "
                 "open **Model metrics** to see each top interaction's value (`<index>/<members>/value`, members "
                 "as `f<feature id>_<label>`, with `ci_low`/`ci_high`), `faithfulness/heldout_r2` and `verdict` "
                 "(1 passed, 0.5 undecided, 0 failed) as a line over versions.", "",
                 "| version | verdict | audit run | recorded (UTC) |", "|---|---|---|---|"]
        for v in versions:
            field = lambda f, v=v: tags.get(f"spex.drift.v{v}.{f}", "")  # noqa: E731
            run_cell = "–"
            if field("run_id") and field("experiment_id"):
                run_cell = f"[{_md_cell(field('run_name') or field('run_id')[:12])}]" \
                           f"({run_url('', field('experiment_id'), field('run_id'))})"
            lines.append(f"| {v} | {field('verdict') or '–'} | {run_cell} | {field('time')[:16].replace('T', ' ')} |")
        return "\n".join(lines)


VERDICT_HEADING = "### spex audits"


def _md_cell(text: Any) -> str:
    """Text safe inside a markdown table cell (no pipe, no line break)."""
    return " ".join(str(text).split()).replace("|", "\\|")
