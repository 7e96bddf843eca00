"""Crashed audits: an audit left ``running`` by a process of this machine that is gone is marked failed
(``crashed``) and its MLflow runs closed, at the start of the next audit.

Why: a process killed outright (``kill -9``, the OOM killer) cannot record its own end, so its audit
would read ``running`` for ever and its MLflow runs stay RUNNING. Its measurements are safe (the
ablation store; a rerun records a new audit from them); only the record of the dead run is fixed here.
Each audit stores its owner (:func:`spex.audit.owners.process_owner`: host, pid, start time); audits owned by other
machines are left alone — only their own machine can tell whether their process still runs.
"""

from __future__ import annotations

from spex.audit import progress
from spex.audit.owners import owner_gone
from spex.audit.recording import Destinations, fail_audit


def reap_crashed_audits(to: Destinations) -> list[str]:
    """Mark failed every audit of this machine whose process is gone, close its MLflow runs; returns their ids."""
    store = to.store
    reaped = []
    for summary in store.list_audits(status="running", limit=None):
        owner = (store.get_audit(summary.id).spec.get("_audit") or {}).get("owner")
        if not owner or not owner_gone(owner):
            continue
        fail_audit(to, summary.id, summary.mlflow_run_id,
                   f"crashed: process {owner.get('pid')} on {owner.get('host')} ended without finishing the audit")
        progress.emit("audit_reaped", audit_id=summary.id, pid=owner.get("pid"), host=owner.get("host"))
        reaped.append(summary.id)
    return reaped
