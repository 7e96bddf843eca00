"""Prefect tasks: one thin task per pipeline stage over a :mod:`spex.audit` function (prepare, sample,
ablate, fit, search, validate, record), adding only Prefect's caching and retry options.
:class:`tasks.stages.TaskStages` hands them to the pipeline; they pass ids, digests, typed stage
outputs and arrays, never models or clients."""
