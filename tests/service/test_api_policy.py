"""What a REST caller's trials may run and read, against the real `cpsweep serve`.

The server runs with `CPSWEEP_FACTORY_MODULES=trainables` and one allowed data directory;
its Ray address is a dashboard that never answers, so a spec that passes validation gets
503 (it would have been submitted) and a refused one 422 naming where it came from. Each
test reproduces one way the key-path checks were bypassed: whole sections in arms and
grids, attribute paths after the colon, and YAML/JSON that is not plain data.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.servers import Processes, base_env, free_port, wait_http
from tests.service.test_api_hardening import CPSWEEP, HungDashboard, Server

pytestmark = pytest.mark.integration

SPEC = "name: p\ntrain: {epochs: 2, data: {name: digits}}\ntracking: {enabled: false}\n"
ALLOWED = "trainables.models.builtin:small_cnn"  # under the allowed prefix, defined there


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("policy")
    (root / "data" / "cifar").mkdir(parents=True)
    dashboard = HungDashboard()
    token = secrets.token_urlsafe(32)
    (root / "token").write_text(token)
    port = free_port()
    env = base_env(
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        CPSWEEP_DATA_ROOTS=str(root / "data"),
        CPSWEEP_FACTORY_MODULES="trainables",
    )
    log = root / "api.log"
    procs = Processes(marker=str(root))
    with open(log, "w") as out:
        p = subprocess.Popen(
            [
                CPSWEEP,
                "serve",
                "--host=127.0.0.1",
                f"--port={port}",
                f"--token-file={root / 'token'}",
                f"--ray-address=http://127.0.0.1:{dashboard.port}",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    procs.groups.append(p.pid)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", 120, proc=p, log=log)
        yield Server(url, token, log, port)
    finally:
        procs.stop()
        dashboard.close()


def post(server: Server, body: str, ctype: str = "application/x-yaml") -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/sweeps",
        content=body.encode(),
        headers={**server.auth, "Content-Type": ctype},
        timeout=30,
    )


def refused(server: Server, body: str, ctype: str = "application/x-yaml") -> dict:
    """The one problem of a refused spec; before the fix these were 503 (accepted)."""
    r = post(server, body, ctype)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert len(detail) == 1, detail
    return detail[0]


def accepted(server: Server, body: str) -> None:
    r = post(server, body)
    assert r.status_code == 503, r.text  # valid: only the (hung) cluster is missing


# -- whole sections in arms and grids --------------------------------------------------


def test_a_factory_in_an_arms_whole_section_is_refused(server: Server) -> None:
    body = (
        "name: t\narms: {a: {data: {factory: 'subprocess:run', "
        "kwargs: {args: 'touch pwned', shell: true}}}}\n"
    )
    d = refused(server, body)
    assert d["loc"] == ["arms", "a", "data"] and d["input"] == "subprocess:run"
    assert "data.factory" in d["msg"] and "CPSWEEP_FACTORY_MODULES: trainables" in d["msg"]


@pytest.mark.parametrize("kind", ["grid", "choice"])
def test_a_factory_in_a_searched_section_is_refused(server: Server, kind: str) -> None:
    body = f"name: t\nsearch_space: {{model: {{{kind}: [{{name: small_cnn}}, {{factory: 'os:system'}}]}}}}\n"
    d = refused(server, body)
    assert d["loc"] == ["search_space", "model", kind, 1] and d["input"] == "os:system"


def test_a_loop_in_an_arm_or_a_choice_is_refused(server: Server) -> None:
    d = refused(server, SPEC + "arms: {a: {loop: 'os:system'}}\n")
    assert d["loc"] == ["arms", "a", "loop"] and d["msg"].startswith("train.loop: ")
    d = refused(server, SPEC + f"search_space: {{loop: {{choice: ['{ALLOWED}', 'os:popen']}}}}\n")
    assert d["loc"] == ["search_space", "loop", "choice", 1] and d["input"] == "os:popen"


# -- the attribute after the colon ---------------------------------------------------


@pytest.mark.parametrize(
    "where",
    [
        "train: {{data: {{factory: '{t}', kwargs: {{cmd: 'touch pwned'}}}}}}",
        "arms: {{a: {{data: {{factory: '{t}'}}}}}}",
        "search_space: {{data: {{grid: [{{factory: '{t}'}}]}}}}",
    ],
)
def test_an_attribute_path_out_of_an_allowed_module_is_refused(server: Server, where: str) -> None:
    body = "name: t\n" + where.format(t="trainables.data.datasets:os.popen") + "\n"
    d = refused(server, body)
    assert d["input"] == "trainables.data.datasets:os.popen"
    assert "one public name" in d["msg"]


def test_a_factory_the_policy_allows_is_accepted_everywhere(server: Server) -> None:
    accepted(
        server,
        f"name: t\ntrain: {{epochs: 2, model: {{factory: '{ALLOWED}'}}}}\n"
        f"arms: {{a: {{model: {{factory: '{ALLOWED}', kwargs: {{width: 4}}}}}}}}\n"
        f"search_space: {{model.factory: {{choice: ['{ALLOWED}']}}}}\n"
        "tracking: {enabled: false}\n",
    )


# -- data.root through sections --------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "loc"),
    [
        ("arms: {a: {data: {name: cifar10, root: /etc}}}", ["arms", "a", "data"]),
        (
            "search_space: {data: {grid: [{name: cifar10, root: /etc}]}}",
            ["search_space", "data", "grid", 0],
        ),
        (
            "search_space: {data.root: {choice: [DATA/cifar, /etc]}}",
            ["search_space", "data.root", "choice", 1],
        ),
    ],
)
def test_a_data_root_in_a_section_or_choice_is_refused(
    server: Server, where: str, loc: list
) -> None:
    data = str(server.log.parent / "data")
    d = refused(server, SPEC + where.replace("DATA", data) + "\n")
    assert d["loc"] == loc and d["input"] == "/etc" and "CPSWEEP_DATA_ROOTS" in d["msg"]


def test_a_data_root_under_the_allowed_directory_is_accepted(server: Server) -> None:
    data = server.log.parent / "data" / "cifar"
    accepted(server, SPEC + f"arms: {{a: {{data: {{name: cifar10, root: {data}}}}}}}\n")


# -- specs are data ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("!!binary /w==", "!!binary"),
        ("!!set {a, b}", "!!set"),
        ("!!timestamp 2001-12-14", "!!timestamp"),
    ],
)
def test_yaml_tags_are_refused(server: Server, value: str, tag: str) -> None:
    """Before: !!binary got through validation and failed in build_submission (HTTP 500
    with a cluster); !!set and !!timestamp were accepted."""
    body = (
        f"name: t\ntrain: {{epochs: 2, model: {{factory: '{ALLOWED}', kwargs: {{x: {value}}}}}}}\n"
    )
    d = refused(server, body)
    assert d["loc"] == ["body"] and f"YAML tag {tag} at line 2" in d["msg"]


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        ("name: a\ntrain: {epochs: 2}\nname: b\n", "application/x-yaml"),
        ('{"name": "a", "train": {"epochs": 2, "epochs": 3}}', "application/json"),
    ],
)
def test_duplicate_keys_are_refused(server: Server, body: str, ctype: str) -> None:
    d = refused(server, body, ctype)  # before: the last value silently won
    assert d["loc"] == ["body"] and "duplicate key" in d["msg"]


def test_an_implicit_date_reads_as_text(server: Server) -> None:
    accepted(server, SPEC + "description: 2024-01-31\n")  # before: 422, a date is no str


def test_json_bodies_are_judged_by_the_same_policy(server: Server) -> None:
    spec = {"name": "j", "arms": {"a": {"data": {"name": "cifar10", "root": "/etc"}}}}
    d = refused(server, json.dumps(spec), "application/json")
    assert d["loc"] == ["arms", "a", "data"]
