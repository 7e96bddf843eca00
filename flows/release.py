"""The release audit: a candidate model version against its baseline, ending in pass / fail.

1. audit the baseline (a plain audit; cheap when it was audited before: the ablation store and the
   task cache serve every mask already measured);
2. audit the candidate as a ``release`` audit linked to the baseline's audit: its report and gates
   include, per subject, the diff of the ranked interactions (appeared, disappeared, sign flips, rank
   correlation, top-k Jaccard, rank shifts) and every configured gate;
3. the candidate's MLflow registry version (if it is one) is tagged with the outcome.

Returns the candidate's outcome (``passed`` decides the CLI's exit code) with the baseline's in its
``baseline`` field.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from prefect import flow

from flows.artifacts import release_run_name
from flows.audit import audit
from spex.audit.pipeline import AuditOutcome
from spex.audit.preflight import release_models
from tasks.runners import open_runner, parse_runner


@flow(name="spex-release-audit", flow_run_name=release_run_name, log_prints=False)
def release_audit(spec: dict[str, Any], candidate: str | None = None, baseline: str | None = None,
                  db_url: str | None = None, tracking_uri: str | None = None,
                  refresh_cache: bool = False, runner: str = "local") -> AuditOutcome:
    """Audit ``baseline`` then ``candidate`` (default: the spec's ``baseline`` and ``model``) and diff them.

    ``runner`` (``local``, ``ray``, ``ray=ADDRESS``): where the ablation chunks of both audits run; a Ray
    cluster is connected (or started) once for both."""
    parse_runner(runner)
    candidate_model, baseline_model = release_models(spec, candidate, baseline)
    with open_runner(runner):  # both audits below reuse this connection
        base = audit(spec, model=baseline_model, kind="audit", db_url=db_url, tracking_uri=tracking_uri,
                     refresh_cache=refresh_cache, runner=runner)
        result = audit(spec, model=candidate_model, kind="release",
                       baseline_model=base.model, baseline_audit_id=base.audit_id, db_url=db_url,
                       tracking_uri=tracking_uri, refresh_cache=refresh_cache, runner=runner)
    return dataclasses.replace(result, baseline=base)
