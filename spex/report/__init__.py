"""Audit reports: one self-contained HTML file and a JSON export (shapiq-compatible), built from the
metadata DB.

    from spex.report import write_audit_report
    paths = write_audit_report(MetadataStore(), audit_id, out_dir)   # {"html": ..., "json": ...}

Imports neither torch, MLflow nor Prefect (the metadata store brings SQLAlchemy).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from spex.report.data import ReportData, SubjectReport, load_report_data
from spex.report.export import export, write_export
from spex.report.html import render_html

__all__ = ["ReportData", "SubjectReport", "load_report_data", "render_html", "export", "write_export",
           "write_audit_report", "report_dir"]


def report_dir(audit_id: str) -> Path:
    """Where an audit's report lives by default: ``<data dir>/reports/<audit id>``."""
    from spex.settings import data_dir

    return data_dir() / "reports" / audit_id


def write_audit_report(store: Any, audit_id: str, out_dir: Path | None = None) -> dict[str, Path]:
    """Build the report of a recorded audit and write ``report.html`` + ``interactions.json`` (+ shapiq files)."""
    data = load_report_data(store, audit_id)
    out = Path(out_dir) if out_dir is not None else report_dir(data.audit_id)
    out.mkdir(parents=True, exist_ok=True)
    html = render_html(data)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".report-", suffix=".html")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(html)
        os.replace(tmp, out / "report.html")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    json_path = write_export(data, out)
    return {"html": out / "report.html", "json": json_path}
