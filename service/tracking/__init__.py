"""Tracking: what a sweep writes to MLflow and how (the schema, the Tune callback, the WAL
and its writer, the sweep's parent run, per-trial usage, accounting and prices)."""
