"""Request bodies of the REST API: size-limited reading, JSON/YAML parsing, spec validation.

Every failure is an HTTPException whose detail names the problem in FastAPI's
error shape (`loc`, `msg`, `type`), so a client sees what to fix. Parsing and
validation are CPU work: `service.api.app` runs them in a worker thread, a few at a time.
"""

import logging
import math
from typing import Any

import anyio
from fastapi import HTTPException, Request
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from service.api.allowlists import policy_problems, tracking_uri_problem
from service.limits import LIMITS_CONTEXT, SpecLimits
from service.spec import SweepSpec
from trainables.core.policy import Policy
from trainables.core.specdata import MAX_NESTING, SpecDataError, load_json, load_yaml

__all__ = ["MAX_NESTING", "parse_spec", "read_body", "validate_spec"]

log = logging.getLogger(__name__)

_JSON_TYPES = {"application/json"}
_YAML_TYPES = {"application/x-yaml", "application/yaml", "text/yaml", "text/x-yaml", ""}


def _body_error(msg: str, status: int = 422) -> HTTPException:
    return HTTPException(status, [{"loc": ["body"], "msg": msg, "type": "body"}])


async def read_body(request: Request, limit: int, timeout_s: float = 15.0) -> bytes:
    """The raw body, counted as it streams: Content-Length may be absent or wrong.

    A client that trickles its body is cut off after `timeout_s` (408).
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _body_error(f"body over {limit} bytes", 413)
    chunks, size = [], 0
    try:
        with anyio.fail_after(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _body_error(f"body over {limit} bytes", 413)
                chunks.append(chunk)
    except TimeoutError:
        raise _body_error(f"body not received within {timeout_s:g} s", 408) from None
    return b"".join(chunks)


def _depth(tree: Any) -> int:
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_NESTING:
            break
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return deepest


def parse_spec(body: bytes, content_type: str) -> dict[str, Any]:
    """The body as plain data (trainables.core.specdata: no tags, aliases, duplicate keys)."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype not in _JSON_TYPES | _YAML_TYPES:
        raise HTTPException(415, "send the spec as application/json or application/x-yaml")
    try:
        text = body.decode("utf-8")
        raw = load_json(text) if ctype in _JSON_TYPES else load_yaml(text)
    except UnicodeDecodeError:
        raise _body_error("body is not UTF-8") from None
    except SpecDataError as exc:
        kind = "JSON" if ctype in _JSON_TYPES else "YAML"
        msg = str(exc).removeprefix(f"not valid {kind}: ")
        raise _body_error(f"not valid {kind}: {msg[:300]}") from None
    except RecursionError:
        raise _body_error(f"nested deeper than {MAX_NESTING} levels") from None
    if not isinstance(raw, dict):
        raise _body_error(f"the spec must be a mapping of fields, got {type(raw).__name__}")
    if _depth(raw) > MAX_NESTING:
        raise _body_error(f"nested deeper than {MAX_NESTING} levels")
    return raw


def _shown(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no NaN/inf
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _unprocessable(loc: list[Any], msg: str, value: Any) -> HTTPException:
    return HTTPException(
        422, [{"loc": loc, "msg": msg, "type": "value_error", "input": _shown(value)}]
    )


def validate_spec(
    raw: dict[str, Any],
    mlflow_uri: str | None,
    *,
    limits: SpecLimits | None = None,
    tracking_uris: tuple[str, ...] = (),
    policy: Policy | None = None,
) -> SweepSpec:
    """The spec, or 422 naming each bad field. `policy`: what its trials may run and read
    (service.api.allowlists; None: anything)."""
    try:
        spec = SweepSpec.model_validate(raw, context={LIMITS_CONTEXT: limits})
    except ValidationError as exc:
        detail = [
            {
                "loc": list(e["loc"]),
                "msg": "unknown field; remove it or check the spelling"
                if e["type"] == "extra_forbidden"
                else e["msg"],
                "type": e["type"],
                "input": _shown(e.get("input")),
            }
            for e in exc.errors(include_url=False)
        ]
        raise HTTPException(422, detail) from None
    problem = tracking_uri_problem(spec.tracking.uri, mlflow_uri, tracking_uris)
    if problem is not None:
        raise _unprocessable(["tracking", "uri"], problem, spec.tracking.uri)
    if policy is not None:
        for loc, value, msg in policy_problems(spec, policy):
            raise _unprocessable(loc, msg, value)
    return spec


def client_gone(request: Request, exc: ClientDisconnect) -> None:
    """A client that hangs up mid-request is routine, not a server error."""
    log.info("%s %s: client disconnected", request.method, request.url.path)
