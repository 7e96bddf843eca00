"""Prefect flows: audit, release audit, scheduled audits — compositions only. The audit flow hands the
stages as Prefect tasks (:mod:`tasks`) to the pipeline of :mod:`spex.audit.pipeline`; the layers point
one way: flows -> tasks -> spex."""
