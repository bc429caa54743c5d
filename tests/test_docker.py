"""The Dockerfiles in docker/ agree with the pins: the Ray base image carries the pinned Ray
and a Python that pyproject allows, the MLflow image the pinned MLflow, both install with
`-c constraints.txt`, run as a non-root user and bake in no credentials."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.reference import pinned_version

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
# rayproject/ray:<ray version>-py<major><minor>-<platform>, e.g. 2.60.0-py311-cpu
RAY_TAG = re.compile(
    r"^rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<py>3)(?P<minor>\d+)-(?P<p>\w+)$"
)


@dataclass
class Stage:
    base: str  # the FROM image, build args substituted
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, args)


@dataclass
class Dockerfile:
    args: dict[str, str]  # ARG defaults, global and per stage
    stages: list[Stage]

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
    assert not current, "Dockerfile ends in a line continuation"
    return lines


def _substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def parse(path: Path) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default.strip().strip('"')
        elif instruction == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(_substitute(words[0], args), alias))
        if stages and instruction != "FROM":
            stages[-1].instructions.append((instruction, rest))
    assert stages, f"{path}: no FROM"
    return Dockerfile(args, stages)


def _requires_python() -> SpecifierSet:
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(r'^requires-python\s*=\s*"([^"]+)"', text, re.M)
    assert match, "pyproject.toml has no requires-python"
    return SpecifierSet(match.group(1))


@pytest.fixture(scope="module")
def ray() -> Dockerfile:
    return parse(DOCKER / "ray.Dockerfile")


@pytest.fixture(scope="module")
def mlflow() -> Dockerfile:
    return parse(DOCKER / "mlflow.Dockerfile")


def _gpu_bases() -> list[str]:
    """The GPU base images docker/README.md builds with (--build-arg BASE=...)."""
    readme = (DOCKER / "README.md").read_text()
    return [b for b in re.findall(r"--build-arg\s+BASE=(\S+)", readme) if "@" not in b]


def test_ray_base_image_matches_the_pins(ray: Dockerfile) -> None:
    bases = [ray.final().base, *_gpu_bases()]
    assert len(bases) >= 2, "docker/README.md shows no GPU build (--build-arg BASE=...)"
    platforms = set()
    for base in bases:
        match = RAY_TAG.match(base)
        assert match, f"{base} is not rayproject/ray:<version>-py3<minor>-<platform>"
        assert match["ray"] == pinned_version("ray"), (
            f"{base}: Ray {match['ray']} != pin {pinned_version('ray')}"
        )
        python = Version(f"{match['py']}.{match['minor']}")
        assert python in _requires_python(), f"{base}: Python {python} outside requires-python"
        platforms.add(match["p"])
    assert "cpu" in platforms and platforms - {"cpu"}, f"need a cpu and a gpu base: {bases}"


def test_ray_image_installs_the_repo_with_the_constraints(ray: Dockerfile) -> None:
    final = ray.final()
    copied = " ".join(a for i, a in final.instructions if i == "COPY")
    for path in ("constraints.txt", "pyproject.toml", "service/", "trainables/", "search_spaces/"):
        assert path in copied, f"ray.Dockerfile does not COPY {path}"
    installs = [a for i, a in final.instructions if i == "RUN" and "pip install" in a]
    assert installs, "ray.Dockerfile runs no pip install"
    for command in installs:
        assert re.search(r"(-c|--constraint)\s+\S*constraints\.txt", command), command
        assert re.search(r"\s\.(\s|$)", command), f"does not install the repo (.): {command}"
    workdirs = [a for i, a in final.instructions if i == "WORKDIR"]
    assert workdirs[-1] == "/app"


def test_mlflow_image_matches_thepinned_version(mlflow: Dockerfile) -> None:
    installs = [a for i, a in mlflow.final().instructions if i == "RUN" and "pip install" in a]
    assert len(installs) == 1
    command = _substitute(installs[0], mlflow.args)
    # The [auth] extra: `mlflow server --app-name basic-auth` (k8s/base/mlflow.yaml).
    assert f"mlflow[auth]=={pinned_version('mlflow')}" in command, command
    assert "psycopg2" in command, "the server needs the PostgreSQL driver"
    assert re.search(r"(-c|--constraint)\s+\S*constraints\.txt", command), command
    match = re.match(r"^python:(\d+\.\d+)-slim", mlflow.final().base)
    assert match, mlflow.final().base
    assert Version(match.group(1)) in _requires_python()


@pytest.mark.parametrize("name", ["ray.Dockerfile", "mlflow.Dockerfile"])
def test_every_base_image_can_be_pinned_by_digest(name: str) -> None:
    """Issue 12: a release build passes `--build-arg X=image@sha256:<digest>` for every
    base (docker/README.md); so no FROM may name a tag directly."""
    text = (DOCKER / name).read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and all(re.fullmatch(r"\$\{\w+\}", f) for f in froms), froms
    args = re.findall(r"^ARG\s+(\w+)=", text, re.M)
    assert {f[2:-1] for f in froms} <= set(args)
    readme = (DOCKER / "README.md").read_text()
    for arg in (f[2:-1] for f in froms):
        assert re.search(rf"--build-arg {arg}=\S+@sha256:<digest>", readme), arg


@pytest.mark.parametrize("name", ["ray.Dockerfile", "mlflow.Dockerfile"])
def test_images_run_as_non_root_without_secrets(name: str) -> None:
    dockerfile = parse(DOCKER / name)
    users = [a for i, a in dockerfile.final().instructions if i == "USER"]
    assert users, f"{name}: the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{name} runs as root"
    for value in dockerfile.all("ENV") + dockerfile.all("ARG") + list(dockerfile.args):
        assert not re.search(r"TOKEN|PASSWORD|SECRET|API_KEY", value, re.I), f"{name}: {value}"


def test_parser_reads_what_docker_reads(tmp_path: Path) -> None:
    """Guard the helper above: continuations, comments, ARG substitution, stages."""
    path = tmp_path / "Dockerfile"
    path.write_text(
        "ARG BASE=rayproject/ray:1.2.3-py310-cpu\n"
        "FROM debian AS data\n"
        "# comment\n"
        "FROM ${BASE}\n"
        "RUN pip install \\\n    -c constraints.txt .\n"
        "USER 1000:100\n"
    )
    parsed = parse(path)
    assert [s.base for s in parsed.stages] == ["debian", "rayproject/ray:1.2.3-py310-cpu"]
    assert parsed.stages[0].name == "data"
    assert parsed.final().instructions == [
        ("RUN", "pip install -c constraints.txt ."),
        ("USER", "1000:100"),
    ]
