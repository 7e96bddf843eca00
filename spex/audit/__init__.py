"""The audit around the engine: the spec, the pipeline stages as plain functions, diffs and gates."""
