"""Prefect flows: audit, release audit, scheduled audits. They chain the tasks of ``tasks/`` (and use
``spex.audit.spec`` / ``spex.settings`` / ``spex.audit.diff`` for the spec, the paths and the gates); the layers point
one way: flows -> tasks -> spex."""
