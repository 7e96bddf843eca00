"""Prefect flows: audit, release audit, scheduled audits. They chain tasks/; they import nothing
from each other's internals and nothing from spex/ directly but through tasks/."""
