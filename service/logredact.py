"""Keep response bodies of remote servers out of logs (a sweep's log is readable via the API).

MLflow's REST client puts the whole response body of a failed request into its
exception ("... failed with error code 404 != 200. Response body: '<html>...'"). A
sweep's log is served by `GET /v1/sweeps/{id}/logs`, so a tracking URI that points
somewhere unexpected would let a caller read what that server answered. The filter
below cuts every "Response body: ..." from log messages and tracebacks; the status
code and endpoint stay.
"""

from __future__ import annotations

import logging
import re

__all__ = ["RedactResponseBodies", "install", "redact"]

_BODY = re.compile(r"Response body: .*", re.DOTALL)
_WITHHELD = "Response body: <withheld from logs>"


def redact(text: str) -> str:
    """`text` with everything from "Response body:" on a line (and after) withheld."""
    return "\n".join(_BODY.sub(_WITHHELD, line) for line in text.split("\n"))


class RedactResponseBodies(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Response body:" in message:
            record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and "Response body:" in record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Add the filter to every handler of `logger` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactResponseBodies) for f in handler.filters):
            handler.addFilter(RedactResponseBodies())
