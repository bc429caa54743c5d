"""A Dockerfile and its build context, as `docker build` sees them, without Docker.

- `parse` reads a Dockerfile into stages and instructions (continuations, comments, ARG
  substitution in FROM).
- `IgnoreRules` applies a .dockerignore the way BuildKit does (moby/patternmatcher,
  `MatchesOrParentMatches`): `*` and `?` stay inside one path segment, `**` spans any
  number of them, a pattern that matches a parent directory matches everything below it,
  `!` re-includes, and the last matching line wins.
- `assemble` lays out what the COPY lines of a stage put into the image's filesystem,
  taking sources only from the files the .dockerignore lets into the context, and fails as
  the build fails when a source is missing or excluded.

The tests compare this against the project (tests/test_docker.py); `make image-check`
builds the real image with podman.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

__all__ = [
    "BuildContextError",
    "Dockerfile",
    "IgnoreRules",
    "Stage",
    "assemble",
    "context_files",
    "parse",
    "substitute",
]


class BuildContextError(Exception):
    """What `docker build` would stop on, in its terms."""


# -- the Dockerfile --------------------------------------------------------------------


@dataclass
class Stage:
    base: str  # the FROM image, build args substituted
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, args)


@dataclass
class Dockerfile:
    args: dict[str, str]  # ARG defaults, global and per stage
    stages: list[Stage]
    global_args: dict[str, str] = field(default_factory=dict)  # before the first FROM

    def final(self) -> Stage:
        return self.stages[-1]

    def all(self, instruction: str) -> list[str]:
        return [a for s in self.stages for i, a in s.instructions if i == instruction]


def _logical_lines(text: str) -> list[str]:
    """Join backslash continuations and drop comments and blank lines (no heredocs used)."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        lines.append((current + stripped).strip())
        current = ""
    if current:
        raise BuildContextError("the Dockerfile ends in a line continuation")
    return lines


def substitute(value: str, args: dict[str, str], missing: str | None = None) -> str:
    """`$NAME` and `${NAME}` from `args`; others become `missing`, or stay for the shell."""

    def one(m: re.Match[str]) -> str:
        return args.get(m.group(1), m.group(0) if missing is None else missing)

    return re.sub(r"\$\{?(\w+)\}?", one, value)


def parse(text: str) -> Dockerfile:
    args: dict[str, str] = {}
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(text):
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default.strip().strip('"')
            if not stages:
                global_args[name] = args[name]
        elif instruction == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(substitute(words[0], args), alias))
        if stages and instruction != "FROM":
            stages[-1].instructions.append((instruction, rest))
    if not stages:
        raise BuildContextError("the Dockerfile has no FROM")
    return Dockerfile(args, stages, global_args)


# -- .dockerignore ---------------------------------------------------------------------

_REGEX_SPECIAL = set(".+()|{}$")


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """moby/patternmatcher's translation of one cleaned pattern to a regex."""
    out, i = "^", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*" and pattern[i + 1 : i + 2] == "*":
            i += 2
            if pattern[i : i + 1] == "/":  # `**/` is `**`
                i += 1
            out += ".*" if i == len(pattern) else "(.*/)?"
            continue
        if ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        elif ch in _REGEX_SPECIAL:
            out += "\\" + ch
        else:
            out += ch  # letters, `/`, and `[...]` classes, which mean the same in both
        i += 1
    return re.compile(out + "$")


@dataclass(frozen=True)
class _Rule:
    text: str  # the cleaned pattern
    exclusion: bool  # False for a `!` line
    regex: re.Pattern[str]


class IgnoreRules:
    """The lines of one .dockerignore."""

    def __init__(self, text: str) -> None:
        self.rules: list[_Rule] = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = not line.startswith("!")
            if not exclusion:
                line = line[1:].strip()
                if not line:
                    raise BuildContextError(f".dockerignore line {number}: a `!` with no pattern")
            cleaned = posixpath.normpath(line)
            if len(cleaned) > 1 and cleaned.startswith("/"):
                cleaned = cleaned.lstrip("/")
            self.rules.append(_Rule(cleaned, exclusion, _pattern_regex(cleaned)))

    def excluded(self, path: str) -> bool:
        """Whether `path` (relative, `/`-separated) stays out of the context."""
        parents = list(PurePosixPath(path).parents)[:-1][::-1]  # a, a/b, ... (not ".")
        candidates = [str(p) for p in parents] + [path]
        result = False
        for rule in self.rules:
            if rule.exclusion == result:
                continue  # cannot change the outcome, as patternmatcher skips it
            if any(rule.regex.match(c) for c in candidates):
                result = rule.exclusion
        return result

    def may_include_below(self, directory: str) -> bool:
        """Whether the walk must enter an excluded `directory`: moby does so only when a
        `!` pattern starts with it (a literal prefix, no wildcards)."""
        return any(
            not rule.exclusion and (rule.text + "/").startswith(directory + "/")
            for rule in self.rules
        )


def context_files(root: Path, rules: IgnoreRules) -> set[str]:
    """Every file under `root` that the build context holds (a symlink counts as a file,
    as in the context's tar), as relative `/`-separated paths."""
    found: set[str] = set()
    for directory, dirs, files in os.walk(root):
        rel = Path(directory).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        links = [d for d in dirs if os.path.islink(os.path.join(directory, d))]
        dirs[:] = [
            d
            for d in dirs
            if d not in links
            and (not rules.excluded(prefix + d) or rules.may_include_below(prefix + d))
        ]
        found.update(p for p in (prefix + f for f in files + links) if not rules.excluded(p))
    return found


# -- COPY ------------------------------------------------------------------------------


def _copy_args(args: str) -> tuple[dict[str, str], list[str]]:
    """COPY's flags and its paths, in the shell form or the JSON form."""
    flags: dict[str, str] = {}
    words = args.split()
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name] = value
    rest = " ".join(words)
    paths = json.loads(rest) if rest.startswith("[") else rest.split()
    if len(paths) < 2:
        raise BuildContextError(f"COPY {args}: needs a source and a destination")
    return flags, paths


def _sources(source: str, files: set[str]) -> list[tuple[str, str, str]]:
    """(file in the context, the path the source matched, the file's path below it).

    A source names a file or a directory (whose contents are copied, not the directory
    itself) and may hold wildcards that match within one path segment (Go's
    filepath.Match, as `docker build` uses)."""
    source = posixpath.normpath("./" + source.lstrip("/"))
    if source == "..":
        raise BuildContextError(f"COPY {source}: outside the build context")
    if source == ".":
        return [(path, "", path) for path in sorted(files)]
    regex = _pattern_regex(source.replace("**", "*"))
    found = []
    for path in sorted(files):
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            head = "/".join(parts[:depth])
            if regex.match(head):
                found.append((path, head, "/".join(parts[depth:])))
                break
    return found


def assemble(root: Path, dockerfile: Dockerfile, rules: IgnoreRules, image: Path) -> None:
    """Write into `image` (standing for `/`) what the final stage's COPY lines from the
    context put there; COPY --from another stage is left out. Raises BuildContextError
    where `docker build` would stop: a source that is missing or excluded."""
    files = context_files(root, rules)
    workdir = "/"
    # Inside a stage only its own ARGs (and ENVs) expand, an unknown name to nothing; one
    # declared before the first FROM must be declared again (without a value, it takes
    # the global default).
    stage_args: dict[str, str] = {}
    for instruction, args in dockerfile.final().instructions:
        if instruction == "ARG":
            name, eq, default = args.partition("=")
            value = default.strip().strip('"') if eq else dockerfile.global_args.get(name, "")
            stage_args[name.strip()] = value
        if instruction == "ENV":
            name, _, value = args.replace("=", " ", 1).partition(" ")
            stage_args[name] = substitute(value.strip().strip('"'), stage_args, "")
        if instruction == "WORKDIR":
            workdir = posixpath.join(workdir, substitute(args, stage_args, ""))
            (image / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        if instruction not in ("COPY", "ADD"):
            continue
        flags, paths = _copy_args(args)
        if "from" in flags:
            continue
        *sources, dest = (substitute(p, stage_args, "") for p in paths)
        dest = posixpath.join(workdir, dest)
        into_dir = dest.endswith("/") or len(sources) > 1
        for source in sources:
            matched = _sources(source, files)
            if not matched:
                where = root / source.lstrip("/")
                why = "excluded by the .dockerignore" if where.exists() else "not in the context"
                raise BuildContextError(f"COPY {source}: {why} (the build stops: not found)")
            into_dir = into_dir or len({head for _, head, _ in matched}) > 1
            for path, head, below in matched:
                if below:  # a file inside a directory the source named
                    target = posixpath.join(dest, below)
                else:
                    target = posixpath.join(dest, posixpath.basename(head)) if into_dir else dest
                out = image / target.lstrip("/")
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / path, out, follow_symlinks=False)
