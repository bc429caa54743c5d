"""The MLflow client settings of a service: short timeouts, which failures heal, one store setup.

The tracking writer (`service.tracking.writer`) and `cpsweep sync` share these: a request
that hangs costs seconds, a transient failure is retried by the writer itself, and the
store is created and migrated once, before any trial starts.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["configure_client", "is_transient", "prepare_store"]

# MLflow error codes a retry can heal (the server's own or its database's trouble); any
# other MLflow error (a bad value, a deleted run) will not heal: that op is reported, skipped.
_TRANSIENT_CODES = {
    "INTERNAL_ERROR",
    "TEMPORARILY_UNAVAILABLE",
    "REQUEST_LIMIT_EXCEEDED",
    "DEADLINE_EXCEEDED",
    "ABORTED",
    "RESOURCE_EXHAUSTED",
}
_SET_BY_US: dict[str, str] = {}  # what configure_client set (a later sweep may change it)


def configure_client(timeout_s: int) -> None:
    """A service's client settings: a short per-request timeout, one quick retry, no URLs.

    MLflow's defaults (120 s timeout, 7 retries with backoff factor 2) suit an
    interactive user and made one write wait minutes; the writer retries on its own.
    An operator's explicit environment wins."""
    wanted = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        # set_terminated against a server first fetches the whole run (get_run: every
        # latest metric, param and tag) only to print its URL on stdout: one extra
        # request per trial and a thousand lines per 1,000 trials.
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    }
    for key, value in wanted.items():
        if os.environ.get(key) in (None, _SET_BY_US.get(key)):
            os.environ[key] = _SET_BY_US[key] = value


def is_transient(exc: BaseException) -> bool:
    """True for failures a later retry can heal (transport, timeouts, 5xx, a locked sqlite)."""
    import requests
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import OperationalError

    if isinstance(exc, OSError | requests.RequestException | OperationalError | TimeoutError):
        return True
    return isinstance(exc, MlflowException) and exc.error_code in _TRANSIENT_CODES


def prepare_store(uri: str) -> Any:
    """Create and migrate the store once, before any trial starts (sqlite migrations race)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    client.search_experiments(max_results=1)  # creates + migrates a fresh database
    return client
