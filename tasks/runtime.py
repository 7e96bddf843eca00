"""Moved to :mod:`spex.audit.runtime`; these names stay importable here for ``benchmarks/scaleout.py``
until it imports them from there."""

from spex.audit.runtime import spec_from, value_function  # noqa: F401
