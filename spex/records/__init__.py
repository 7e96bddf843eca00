"""Where audits are recorded: the metadata DB (``spex.records.metadata``) and MLflow (``spex.records.tracking``)."""
