"""Specs are data: YAML and JSON text to JSON-compatible values, and nothing else.

The one loader of every spec and config, from a file (`cpsweep run | train | submit`), a
`--set` value or a REST body. It yields only str, int, float, bool, None, list and dict.
YAML's implicit dates and timestamps stay strings (`2024-01-31`), and it refuses, naming
the line:
- any explicit tag (`!!binary`, `!!set`, `!!timestamp`, `!!python/...`, `!foo`, even `!!str`):
  a spec holds plain values; quote a string instead;
- aliases (`*name`): a few of them expand a kilobyte into gigabytes (billion laughs), and the
  refusal comes as the alias is read, before anything is built;
- merge keys (`<<`), keys that are mappings or lists, and the same key twice in a mapping
  (PyYAML and `json` would silently keep the last one);
- nesting deeper than `max_depth`, and more than one YAML document.

The YAML is read as libyaml's event stream (CParser where PyYAML has it) and built here:
no PyYAML constructor runs on the text, so none can be reached by a tag.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

__all__ = ["MAX_NESTING", "SpecDataError", "load_json", "load_yaml"]

MAX_NESTING = 32  # mappings and lists inside each other; a spec needs fewer than ten

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10-50x faster
_SCALARS = SafeConstructor()  # only its int/float/bool parsers of plain text are used
_NULL, _BOOL, _INT, _FLOAT, _MERGE_TAG = (
    f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "merge")
)
_NO_KEY = object()
_MERGE = object()  # a plain `<<`: a merge key where a key is expected, else the text


class SpecDataError(ValueError):
    """The text is not plain data (or not YAML/JSON at all); the message names the line."""


def _where(event: Any) -> str:
    mark = getattr(event, "start_mark", None)
    return f"line {mark.line + 1}" if mark is not None else "somewhere"


def _plain(value: str) -> Any:
    """A plain (unquoted) scalar as YAML 1.1 resolves it, limited to JSON's types."""
    found = Resolver.yaml_implicit_resolvers.get(value[:1] if value else "", [])
    for tag, pattern in [*found, *Resolver.yaml_implicit_resolvers.get(None, [])]:
        if pattern.match(value):
            node = yaml.ScalarNode(tag, value)
            if tag == _NULL:
                return None
            if tag == _BOOL:
                return _SCALARS.construct_yaml_bool(node)
            if tag == _INT:
                return _SCALARS.construct_yaml_int(node)
            if tag == _FLOAT:
                return _SCALARS.construct_yaml_float(node)
            if tag == _MERGE_TAG:
                return _MERGE  # refused where a key is expected; a plain '<<' elsewhere
            break  # timestamps and the rest: the text itself
    return value


class _Builder:
    """Builds the document from events: a stack of open mappings and lists."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.stack: list[dict[Any, Any] | list[Any]] = []
        self.keys: list[Any] = []  # per open mapping: the key awaiting its value, or _NO_KEY
        self.done: list[Any] = []

    def awaiting_key(self) -> bool:
        return bool(self.stack) and isinstance(self.stack[-1], dict) and self.keys[-1] is _NO_KEY

    def put(self, value: Any, event: Any) -> None:
        if not self.stack:
            self.done.append(value)
            return
        top = self.stack[-1]
        if isinstance(top, list):
            top.append(value)
        elif self.keys[-1] is _NO_KEY:
            if value is _MERGE:
                raise SpecDataError(f"merge key '<<' at {_where(event)}: write the keys out")
            if value in top:
                raise SpecDataError(
                    f"duplicate key {str(value)[:100]!r} at {_where(event)}: give each key once"
                )
            self.keys[-1] = value
        else:
            top[self.keys[-1]] = value
            self.keys[-1] = _NO_KEY

    def open(self, container: dict[Any, Any] | list[Any], event: Any) -> None:
        if self.awaiting_key():
            raise SpecDataError(f"a mapping or list as a key at {_where(event)}: use a string")
        if len(self.stack) >= self.max_depth:
            raise SpecDataError(f"nested deeper than {self.max_depth} levels at {_where(event)}")
        self.stack.append(container)
        self.keys.append(_NO_KEY)

    def close(self, event: Any) -> None:
        self.keys.pop()
        self.put(self.stack.pop(), event)


def _document(loader: Any, max_depth: int) -> Any:
    """The one document of the stream; None when it is empty."""
    loader.get_event()  # StreamStartEvent
    if loader.check_event(yaml.StreamEndEvent):
        return None
    loader.get_event()  # DocumentStartEvent
    build = _Builder(max_depth)
    while not loader.check_event(yaml.DocumentEndEvent):
        event = loader.get_event()
        if isinstance(event, yaml.AliasEvent):
            raise SpecDataError(
                f"YAML alias *{event.anchor} at {_where(event)}: aliases are not accepted; "
                "write the value out"
            )
        tag = getattr(event, "tag", None)
        if tag is not None:
            raise SpecDataError(
                f"YAML tag {tag.replace('tag:yaml.org,2002:', '!!')} at {_where(event)}: tags are not accepted, a spec holds "
                "plain values (strings, numbers, booleans, null, lists, mappings); quote "
                "the value to keep it as text"
            )
        if isinstance(event, yaml.ScalarEvent):
            value = _plain(event.value) if event.implicit[0] else event.value
            if value is _MERGE and not build.awaiting_key():
                value = event.value
            build.put(value, event)
        elif isinstance(event, yaml.MappingStartEvent):
            build.open({}, event)
        elif isinstance(event, yaml.SequenceStartEvent):
            build.open([], event)
        else:  # MappingEndEvent, SequenceEndEvent
            build.close(event)
    loader.get_event()  # DocumentEndEvent
    if not loader.check_event(yaml.StreamEndEvent):
        raise SpecDataError(f"a second YAML document at {_where(loader.peek_event())}")
    return build.done[0]


def _one_line(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        return f"{what}{where}"
    return " ".join(str(exc).split())


def load_yaml(text: str, *, max_depth: int = MAX_NESTING) -> Any:
    """The plain data in YAML `text` (None for an empty document); SpecDataError otherwise."""
    loader = _Loader(text)
    try:
        return _document(loader, max_depth)
    except yaml.YAMLError as exc:
        raise SpecDataError(f"not valid YAML: {_one_line(exc)}") from None
    finally:
        loader.dispose()


def _no_constant(name: str) -> Any:
    raise SpecDataError(f"{name} is not a finite number")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SpecDataError(f"duplicate key {key[:100]!r}: give each key once")
        out[key] = value
    return out


def load_json(text: str) -> Any:
    """The data in JSON `text`, refusing duplicate keys and NaN/Infinity; SpecDataError."""
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique)
    except json.JSONDecodeError as exc:
        raise SpecDataError(f"not valid JSON: {exc}") from None
