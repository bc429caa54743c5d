"""The Dockerfiles in docker/ agree with the pins and the project: the Ray base image carries
the pinned Ray and a Python that pyproject allows, the MLflow image the pinned MLflow, both
install with `-c constraints.txt`, run as a non-root user and bake in no credentials; and
the build context their COPY lines and .dockerignore files make (tests/buildcontext.py)
holds every package pyproject.toml names, installs with the Dockerfile's own pip command
and runs `cpsweep` from outside it. `make image-check` builds the real image."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import setuptools
import tomllib
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.buildcontext import (
    BuildContextError,
    Dockerfile,
    IgnoreRules,
    assemble,
    context_files,
    parse,
    substitute,
)
from tests.reference import pinned_version

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
# rayproject/ray:<ray version>-py<major><minor>-<platform>, e.g. 2.60.0-py311-cpu
RAY_TAG = re.compile(
    r"^rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<py>3)(?P<minor>\d+)-(?P<p>\w+)$"
)


def _requires_python() -> SpecifierSet:
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(r'^requires-python\s*=\s*"([^"]+)"', text, re.M)
    assert match, "pyproject.toml has no requires-python"
    return SpecifierSet(match.group(1))


@pytest.fixture(scope="module")
def ray() -> Dockerfile:
    return parse((DOCKER / "ray.Dockerfile").read_text())


@pytest.fixture(scope="module")
def mlflow() -> Dockerfile:
    return parse((DOCKER / "mlflow.Dockerfile").read_text())


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
    installs = [a for i, a in ray.final().instructions if i == "RUN" and "pip install" in a]
    assert installs, "ray.Dockerfile runs no pip install"
    for command in installs:
        assert re.search(r"(-c|--constraint)\s+\S*constraints\.txt", command), command
        assert re.search(r"\s\.(\s|$)", command), f"does not install the repo (.): {command}"
    workdirs = [a for i, a in ray.final().instructions if i == "WORKDIR"]
    assert workdirs[-1] == "/app"
    # What the COPY lines put into /app, and whether that installs and runs:
    # test_ray_image_context_* and test_ray_image_installs_from_its_context below.


def test_mlflow_image_matches_thepinned_version(mlflow: Dockerfile) -> None:
    installs = [a for i, a in mlflow.final().instructions if i == "RUN" and "pip install" in a]
    assert len(installs) == 1
    command = substitute(installs[0], mlflow.args)
    # The [auth] extra: `mlflow server --app-name basic-auth` (k8s/base/mlflow.yaml).
    assert f"mlflow[auth]=={pinned_version('mlflow')}" in command, command
    assert "psycopg2" in command, "the server needs the PostgreSQL driver"
    assert re.search(r"(-c|--constraint)\s+\S*constraints\.txt", command), command
    match = re.match(r"^python:(\d+\.\d+)-slim", mlflow.final().base)
    assert match, mlflow.final().base
    assert Version(match.group(1)) in _requires_python()


@pytest.mark.parametrize("name", ["ray.Dockerfile", "mlflow.Dockerfile"])
def test_every_base_image_can_be_pinned_by_digest(name: str) -> None:
    """A release build passes `--build-arg X=image@sha256:<digest>` for every
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
    dockerfile = parse((DOCKER / name).read_text())
    users = [a for i, a in dockerfile.final().instructions if i == "USER"]
    assert users, f"{name}: the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{name} runs as root"
    for value in dockerfile.all("ENV") + dockerfile.all("ARG") + list(dockerfile.args):
        assert not re.search(r"TOKEN|PASSWORD|SECRET|API_KEY", value, re.I), f"{name}: {value}"


def test_parser_reads_what_docker_reads() -> None:
    """Guard the parser: continuations, comments, ARG substitution, stages."""
    parsed = parse(
        "ARG BASE=rayproject/ray:1.2.3-py310-cpu\n"
        "FROM debian AS data\n"
        "# comment\n"
        "FROM ${BASE}\n"
        "RUN pip install \\\n    -c constraints.txt .\n"
        "USER 1000:100\n"
    )
    assert [s.base for s in parsed.stages] == ["debian", "rayproject/ray:1.2.3-py310-cpu"]
    assert parsed.stages[0].name == "data"
    assert parsed.final().instructions == [
        ("RUN", "pip install -c constraints.txt ."),
        ("USER", "1000:100"),
    ]


# -- .dockerignore and COPY, as docker build applies them ------------------------------


@pytest.mark.parametrize(
    ("lines", "path", "excluded"),
    [
        (["*"], "service/api/app.py", True),  # a match on a parent covers what is below
        (["*", "!service/"], "service/api/app.py", False),  # `!` re-includes
        (["*", "!service/", "**/__pycache__"], "service/__pycache__/x.pyc", True),
        (["*", "**/__pycache__", "!service/"], "service/__pycache__/x.pyc", False),  # last wins
        (["**/*.pyc"], "a.pyc", True),  # `**` also spans zero directories
        (["**/*.pyc"], "a/b/c.pyc", True),
        (["*.pyc"], "a/b.pyc", False),  # `*` stays in one segment, at the top
        (["a/**/c"], "a/c", True),
        (["a/**/c"], "a/x/y/c/d.txt", True),
        (["a/**"], "a", False),  # `**` at the end: only what is inside
        (["a/**"], "a/b", True),
        (["?.txt"], "ab.txt", False),
        (["?.txt"], "a.txt", True),
        (["/docs", "# a comment", ""], "docs/x.md", True),  # a leading `/` is the root
        (["[ab].md"], "b.md", True),
        (["[ab].md"], "c.md", False),
        (["./x/../docs/"], "docs/y", True),  # cleaned like filepath.Clean
        (["file.txt"], "file_txt", False),  # `.` is a dot, not a regex wildcard
    ],
)
def test_dockerignore_semantics(lines: list[str], path: str, excluded: bool) -> None:
    assert IgnoreRules("\n".join(lines)).excluded(path) is excluded


def test_dockerignore_rejects_a_bare_exclamation_mark() -> None:
    with pytest.raises(BuildContextError, match="line 2: a `!` with no pattern"):
        IgnoreRules("*\n!\n")


def _tree(root: Path, files: list[str]) -> Path:
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    return root


def _layout(image: Path) -> set[str]:
    return {p.relative_to(image).as_posix() for p in image.rglob("*") if p.is_file()}


def test_copy_lays_out_files_as_docker_does(tmp_path: Path) -> None:
    files = ["a.txt", "b.txt", "pkg/__init__.py", "pkg/sub/m.py", "pkg/__pycache__/m.pyc"]
    ctx = _tree(tmp_path / "ctx", [*files, "secret.env", "data/x.csv"])
    dockerfile = parse(
        "ARG DEST=/app\n"
        "ARG UNSEEN=/nowhere\n"
        "FROM base\n"
        "ARG DEST\n"  # a global ARG, declared again in the stage: its default
        "WORKDIR ${DEST}\n"
        "COPY a.txt $UNSEEN/\n"  # not declared in the stage: empty, as in docker
        "COPY a.txt ./\n"  # a file into the working directory
        "COPY --chown=1:1 pkg/ pkg/\n"  # a directory's contents
        'COPY ["b.txt", "renamed.txt"]\n'  # JSON form, a file to a file name
        "COPY *.txt /etc/texts/\n"  # wildcards
        "COPY --from=other /x /x\n"  # another stage: not from the context
        "WORKDIR sub\n"
        "COPY a.txt .\n"  # relative to the new WORKDIR
    )
    rules = IgnoreRules("*\n!*.txt\n!pkg\n**/__pycache__\n")
    assert context_files(ctx, rules) == {"a.txt", "b.txt", "pkg/__init__.py", "pkg/sub/m.py"}
    assemble(ctx, dockerfile, rules, tmp_path / "image")
    assert _layout(tmp_path / "image") == {
        "a.txt",
        "app/a.txt",
        "app/pkg/__init__.py",
        "app/pkg/sub/m.py",
        "app/renamed.txt",
        "etc/texts/a.txt",
        "etc/texts/b.txt",
        "app/sub/a.txt",
    }
    excluded = parse("FROM base\nCOPY secret.env /\n")
    with pytest.raises(BuildContextError, match=r"secret\.env: excluded by the \.dockerignore"):
        assemble(ctx, excluded, rules, tmp_path / "image2")
    missing = parse("FROM base\nCOPY nowhere/ /nowhere/\n")
    with pytest.raises(BuildContextError, match="nowhere/: not in the context"):
        assemble(ctx, missing, rules, tmp_path / "image3")


# -- the packages pyproject.toml names, and the context that must hold them -------------


def pyproject_packages(root: Path) -> list[str]:
    """The packages setuptools builds from `root`'s pyproject.toml: the explicit
    `[tool.setuptools] packages` list, or what `[tool.setuptools.packages.find]` finds
    (setuptools' own finder, with its include/exclude/where/namespaces)."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    packages = config.get("tool", {}).get("setuptools", {}).get("packages")
    if isinstance(packages, list):
        return sorted(packages)
    find = packages.get("find", {}) if isinstance(packages, dict) else {}
    if not find:
        raise AssertionError(
            "pyproject.toml names no packages: give [tool.setuptools] packages = [...] or "
            "[tool.setuptools.packages.find] include = [...]"
        )
    finder = setuptools.find_namespace_packages
    if not find.get("namespaces", True):
        finder = setuptools.find_packages
    found = []
    for where in find.get("where", ["."]):
        found += finder(
            str(root / where),
            include=tuple(find.get("include", ["*"])),
            exclude=tuple(find.get("exclude", [])),
        )
    return sorted(found)


def test_pyproject_packages_reads_both_forms(tmp_path: Path) -> None:
    _tree(tmp_path, ["svc/__init__.py", "svc/api/app.py", "tests/test_x.py", "svc/t/x.py"])
    (tmp_path / "pyproject.toml").write_text('[tool.setuptools]\npackages = ["svc", "svc.api"]\n')
    assert pyproject_packages(tmp_path) == ["svc", "svc.api"]
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools.packages.find]\ninclude = ["svc*"]\nexclude = ["svc.t"]\n'
    )
    assert pyproject_packages(tmp_path) == ["svc", "svc.api"]
    (tmp_path / "pyproject.toml").write_text("[tool.setuptools]\n")
    with pytest.raises(AssertionError, match="names no packages"):
        pyproject_packages(tmp_path)
    assert "cpsweep" in pyproject_packages(REPO), "the public package is not in pyproject"


def context_problems(image: Path, workdir: str = "/app") -> list[str]:
    """What the image's copy of the repo lacks against the repo's pyproject.toml: a
    package directory, the readme that setuptools reads, a package-data file."""
    app = image / workdir.lstrip("/")
    problems = []
    for package in pyproject_packages(REPO):
        if not (app / package.replace(".", "/")).is_dir():
            problems.append(f"package {package} (pyproject.toml) is not in {workdir}")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    readme = config["project"].get("readme")
    if isinstance(readme, str) and not (app / readme).is_file():
        problems.append(f"{readme} (pyproject's readme) is not in {workdir}")
    package_data = config.get("tool", {}).get("setuptools", {}).get("package-data", {})
    for package, globs in package_data.items():
        for pattern in globs:
            below = Path(package.replace(".", "/"))
            for path in (REPO / below).glob(pattern):
                if not (app / below / path.name).is_file():
                    problems.append(f"package data {below / path.name} is not in {workdir}")
    return problems


def _ray_context(tmp: Path, dockerfile: str | None = None, ignore: str | None = None) -> Path:
    """The Ray image's filesystem after its COPY lines (the repo's files, or the
    replacement texts given), under `tmp/image`."""
    text = dockerfile if dockerfile is not None else (DOCKER / "ray.Dockerfile").read_text()
    if ignore is None:
        ignore = (DOCKER / "ray.Dockerfile.dockerignore").read_text()
    assemble(REPO, parse(text), IgnoreRules(ignore), tmp / "image")
    return tmp / "image"


def test_ray_image_context_holds_what_pyproject_builds(tmp_path: Path) -> None:
    image = _ray_context(tmp_path)
    assert context_problems(image) == []
    app = image / "app"
    assert (app / "search_spaces" / "quickstart.yaml").is_file()
    assert not list(app.rglob("__pycache__")), "bytecode caches went into the image"
    assert not (app / "tests").exists() and not (app / ".git").exists()


def _drop_line(text: str, needle: str) -> str:
    lines = text.splitlines(keepends=True)
    kept = [line for line in lines if needle not in line]
    assert len(kept) == len(lines) - 1, f"expected one line with {needle!r}"
    return "".join(kept)


_DOCKERFILE = (DOCKER / "ray.Dockerfile").read_text()
_IGNORE = (DOCKER / "ray.Dockerfile.dockerignore").read_text()
# The bug this guards against: cpsweep/ in pyproject but not in the image.
_BROKEN = {
    "no COPY of cpsweep/": (_drop_line(_DOCKERFILE, " cpsweep/ cpsweep/"), _IGNORE),
    "no !cpsweep/ in .dockerignore": (_DOCKERFILE, _drop_line(_IGNORE, "!cpsweep/")),
    "cpsweep/ excluded after": (_DOCKERFILE, _IGNORE + "cpsweep/\n"),
    "README.md left out": (_DOCKERFILE, _drop_line(_IGNORE, "!README.md")),
    "price tables left out": (_DOCKERFILE, _IGNORE + "**/*.json\n"),
}


@pytest.mark.parametrize("case", sorted(_BROKEN))
def test_ray_image_context_check_catches_a_missing_piece(tmp_path: Path, case: str) -> None:
    dockerfile, ignore = _BROKEN[case]
    try:
        problems = context_problems(_ray_context(tmp_path, dockerfile, ignore))
    except BuildContextError as e:  # the build itself stops at the COPY
        problems = [str(e)]
    assert problems, f"{case}: the context check passed"
    names = {"README": "README.md", "price": "prices"}
    expected = next((v for k, v in names.items() if k in case), "cpsweep")
    assert any(expected in p for p in problems), problems


# -- install the context as the image does, then run it from outside ---------------------


def _pip_install_command(dockerfile: Dockerfile) -> str:
    """The `pip install ...` step of the final stage's RUN, as written."""
    for instruction, args in dockerfile.final().instructions:
        if instruction == "RUN" and "pip install" in args:
            return next(part.strip() for part in args.split("&&") if "pip install" in part)
    raise AssertionError("the Dockerfile runs no pip install")


def _install(image: Path, dockerfile: Dockerfile, venv: Path) -> subprocess.CompletedProcess[str]:
    """Install image/app into a fresh venv with the Dockerfile's own pip command."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
        timeout=120,
    )
    # A venv made from a venv's python sees the base interpreter's site-packages, not the
    # project .venv's; a path line (not site.addsitedir) adds .venv's packages without
    # running its .pth files, so .venv's own editable install of this checkout stays out.
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # No pip of its own (ensurepip would bring an old setuptools that shadows .venv's):
    # `pip` is .venv's pip run by this venv's python, the console script pip writes.
    pip = venv / "bin" / "pip"
    pip.write_text(
        f"#!{venv / 'bin' / 'python'}\n"
        "import sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n"
    )
    pip.chmod(0o755)
    # The image resolves torch, Ray and MLflow from an index (gigabytes); here they are
    # already in .venv. --no-deps installs only the project, --no-build-isolation takes
    # setuptools from .venv instead of fetching it into a build env, and --no-index makes
    # any attempt to download fail: offline, a few seconds.
    command = _pip_install_command(dockerfile) + " --no-deps --no-build-isolation --no-index"
    env = {**_clean_env(venv), "TORCH_INDEX_URL": ""}  # the ARG's default
    return subprocess.run(
        ["bash", "-c", command],
        cwd=image / "app",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _clean_env(venv: Path) -> dict[str, str]:
    """No PYTHONPATH (the test runner's points at this checkout), the venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.integration  # a venv, pip and `cpsweep train` in subprocesses
def test_ray_image_installs_from_its_context_and_runs_outside_it(
    tmp_path: Path, ray: Dockerfile
) -> None:
    image = _ray_context(tmp_path)
    venv = tmp_path / "venv"
    install = _install(image, ray, venv)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = _clean_env(venv)

    def run(*cmd: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cmd, cwd=outside, env=env, capture_output=True, text=True, timeout=timeout
        )

    helped = run(str(venv / "bin" / "cpsweep"), "--help")
    assert helped.returncode == 0 and "usage: cpsweep" in helped.stdout, helped.stderr
    app = image / "app"
    where = run(
        str(venv / "bin" / "python"),
        "-c",
        "import importlib.util, json, sys\n"
        "from cpsweep import CriticalPeriod\n"
        "spec = lambda n: importlib.util.find_spec(n)\n"
        "print(json.dumps({n: spec(n).origin for n in sys.argv[1:]}))",
        *pyproject_packages(REPO),
    )
    assert where.returncode == 0, where.stderr[-3000:]
    origins = json.loads(where.stdout)
    assert set(origins) == set(pyproject_packages(REPO))
    strays = {n: o for n, o in origins.items() if not (o or "").startswith(f"{app}/")}
    assert not strays, f"imported from outside the image's /app: {strays}"

    out = tmp_path / "train"
    trained = run(
        str(venv / "bin" / "cpsweep"),
        "train",
        str(app / "search_spaces" / "quickstart.yaml"),
        "--set",
        "epochs=1",
        "--set",
        "criterion.name=never",
        "--output-dir",
        str(out),
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["samples"] > 0, summary


@pytest.mark.integration
def test_ray_image_without_cpsweep_copied_has_no_cpsweep(tmp_path: Path, ray: Dockerfile) -> None:
    """The bug: the Dockerfile does not COPY cpsweep/. pyproject finds its packages, so the
    install may pass, but the image then has no `cpsweep`: the install step above must see
    that, not only the context check."""
    dockerfile, ignore = _BROKEN["no COPY of cpsweep/"]
    venv = tmp_path / "venv"
    install = _install(_ray_context(tmp_path, dockerfile, ignore), ray, venv)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    imported = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "from cpsweep import CriticalPeriod"],
        cwd=outside,
        env=_clean_env(venv),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert install.returncode != 0 or imported.returncode != 0, imported.stdout
    if install.returncode == 0:
        assert "No module named 'cpsweep'" in imported.stderr, imported.stderr[-2000:]


def test_mlflow_image_context_holds_what_it_copies(tmp_path: Path, mlflow: Dockerfile) -> None:
    ignore = (DOCKER / "mlflow.Dockerfile.dockerignore").read_text()
    assemble(REPO, mlflow, IgnoreRules(ignore), tmp_path / "image")
    copied = tmp_path / "image" / "tmp" / "constraints.txt"
    assert copied.read_text() == (REPO / "constraints.txt").read_text()
    with pytest.raises(BuildContextError, match=r"constraints\.txt: excluded"):
        broken = _drop_line(ignore, "!constraints.txt")
        assemble(REPO, mlflow, IgnoreRules(broken), tmp_path / "image2")
