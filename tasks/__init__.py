"""Prefect tasks: thin wrappers over spex/, one per pipeline stage (sample, ablate, fit proxy,
search, validate, record). They pass ids, digests and arrays, never models or clients."""
