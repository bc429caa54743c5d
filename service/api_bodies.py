"""Request bodies of the REST API: size-limited reading, JSON/YAML parsing, spec validation.

Every failure is an HTTPException whose detail names the problem in FastAPI's
error shape (`loc`, `msg`, `type`), so a client sees what to fix.
"""

import json
from typing import Any

import yaml
from fastapi import HTTPException, Request
from pydantic import ValidationError

from service.spec import SweepSpec

__all__ = ["MAX_NESTING", "parse_spec", "read_body", "validate_spec"]

_JSON_TYPES = {"application/json"}
_YAML_TYPES = {"application/x-yaml", "application/yaml", "text/yaml", "text/x-yaml", ""}
MAX_NESTING = 32


class _NoAliasLoader(yaml.SafeLoader):
    """Aliases let 1 KiB of YAML expand to gigabytes once validated: refuse them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not accepted", mark)
        return super().compose_node(parent, index)


def _body_error(msg: str, status: int = 422) -> HTTPException:
    return HTTPException(status, [{"loc": ["body"], "msg": msg, "type": "body"}])


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, counted as it streams: Content-Length may be absent or wrong."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _body_error(f"body over {limit} bytes", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _body_error(f"body over {limit} bytes", 413)
        chunks.append(chunk)
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
    ctype = content_type.split(";")[0].strip().lower()
    if ctype not in _JSON_TYPES | _YAML_TYPES:
        raise HTTPException(415, "send the spec as application/json or application/x-yaml")
    try:
        text = body.decode("utf-8")
        raw = json.loads(text) if ctype in _JSON_TYPES else yaml.load(text, _NoAliasLoader)
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
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def validate_spec(raw: dict[str, Any], mlflow_uri: str | None) -> SweepSpec:
    try:
        spec = SweepSpec.model_validate(raw)
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
    if mlflow_uri and spec.tracking.uri and spec.tracking.uri != mlflow_uri:
        raise HTTPException(
            422,
            [
                {
                    "loc": ["tracking", "uri"],
                    "msg": f"this service logs to its own MLflow ({mlflow_uri}); leave it unset",
                    "type": "value_error",
                    "input": spec.tracking.uri,
                }
            ],
        )
    return spec
