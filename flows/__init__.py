"""Prefect flows: audit, release audit, scheduled audits. They chain the tasks of ``tasks/`` (and use
``spex.spec`` / ``spex.config`` / ``spex.diff`` for the spec, the paths and the gates); the layers point
one way: flows -> tasks -> spex."""
