"""Request bodies of the REST API: size-limited reading, JSON/YAML parsing, spec validation.

Every failure is an HTTPException whose detail names the problem in FastAPI's
error shape (`loc`, `msg`, `type`), so a client sees what to fix. Parsing and
validation are CPU work: `service.api.app` runs them in a worker thread, a few at a time.
"""

import json
import logging
import math
from typing import Any

import anyio
import yaml
from fastapi import HTTPException, Request
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from service.api.allowlists import data_root_problems, factory_problems, tracking_uri_problem
from service.limits import LIMITS_CONTEXT, SpecLimits
from service.spec import SweepSpec

__all__ = ["MAX_NESTING", "parse_spec", "read_body", "validate_spec"]

log = logging.getLogger(__name__)

_JSON_TYPES = {"application/json"}
_YAML_TYPES = {"application/x-yaml", "application/yaml", "text/yaml", "text/x-yaml", ""}
MAX_NESTING = 32
# libyaml's loader where PyYAML was built with it (much faster than pure Python).
_FastSafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


def _load_yaml(text: str) -> Any:
    """YAML without aliases: they let 1 KiB expand to gigabytes once validated.

    libyaml composes the node graph (an alias is the same node object reached twice,
    so the graph stays small); any shared node is refused before construction.
    """
    loader = _FastSafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        seen: set[int] = set()
        stack = [(node, 1)]
        while stack:
            n, depth = stack.pop()
            if id(n) in seen:
                raise yaml.YAMLError(
                    f"YAML aliases are not accepted (line {n.start_mark.line + 1})"
                )
            seen.add(id(n))
            if depth > MAX_NESTING:
                raise RecursionError
            if isinstance(n, yaml.MappingNode):
                stack.extend((x, depth + 1) for kv in n.value for x in kv)
            elif isinstance(n, yaml.SequenceNode):
                stack.extend((x, depth + 1) for x in n.value)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


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
    ctype = content_type.split(";")[0].strip().lower()
    if ctype not in _JSON_TYPES | _YAML_TYPES:
        raise HTTPException(415, "send the spec as application/json or application/x-yaml")
    try:
        text = body.decode("utf-8")
        if ctype in _JSON_TYPES:
            raw = json.loads(text, parse_constant=_refuse_constant)
        else:
            raw = _load_yaml(text)
    except UnicodeDecodeError:
        raise _body_error("body is not UTF-8") from None
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if ctype in _JSON_TYPES else "YAML"
        raise _body_error(f"not valid {kind}: {str(exc)[:300]}") from None
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
    data_roots: tuple[str, ...] | None = None,
    factory_modules: tuple[str, ...] | None = None,
) -> SweepSpec:
    """The spec, or 422 naming each bad field. `data_roots`, `factory_modules`: the
    operator's allow-lists (None: anything; empty: nothing)."""
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
    if data_roots is not None:
        for loc, value, msg in data_root_problems(spec, data_roots):
            raise _unprocessable(loc, msg, value)
    if factory_modules is not None:
        for loc, value, msg in factory_problems(spec, factory_modules):
            raise _unprocessable(loc, msg, value)
    return spec


def client_gone(request: Request, exc: ClientDisconnect) -> None:
    """A client that hangs up mid-request is routine, not a server error."""
    log.info("%s %s: client disconnected", request.method, request.url.path)
