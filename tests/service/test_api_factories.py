"""The REST server checks factory strings as text and never imports the user's module."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from service.jobs.client import build_submission
from tests.service.test_api_unit import (  # _no_server_env: autouse, here too
    AUTH,
    FakeJobs,
    _client,
    _no_server_env,  # noqa: F401
    _post_yaml,
)
from trainables.core.imports import IMPORT_PATH_ENV

SIDE_EFFECT = """\
from pathlib import Path
Path(__file__).with_name("IMPORTED").write_text("the server ran user code")


def build(*, input_shape, num_classes):
    raise AssertionError("never called in the server")


def load():
    raise AssertionError("never called in the server")
"""


def test_server_validates_factories_as_text_and_never_imports_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "server_side_effect.py").write_text(SIDE_EFFECT)
    # The module would be importable from the server's process: cwd and import path.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(IMPORT_PATH_ENV, str(tmp_path))
    spec = """\
name: factories
train:
  epochs: 2
  model: {factory: "server_side_effect:build", kwargs: {depth: 2}}
  data: {factory: "server_side_effect:load"}
search_space:
  model.kwargs.depth: {grid: [2, 4]}
tracking: {enabled: false}
"""
    fake = FakeJobs()
    with _client(fake, factory_modules=("server_side_effect",)) as client:  # allowlisted
        r = _post_yaml(client, spec)
        assert r.status_code == 201, r.text
        bad = client.post(
            "/v1/sweeps",
            json={"name": "bad", "train": {"data": {"factory": "os.system('x')"}}},
            headers=AUTH,
        )
    assert bad.status_code == 422
    assert [d["loc"] for d in bad.json()["detail"]] == [["train", "data", "factory"]]
    submitted = fake.submitted[0]
    assert submitted.train.model.factory == "server_side_effect:build"
    assert submitted.search_space["model.kwargs.depth"].grid == [2, 4]
    # What the real backend builds from it imports nothing either.
    job = build_submission(submitted, submission_id="cpsweep-factories-1", mlflow_uri=None)
    assert "py_modules" not in job["runtime_env"]
    assert not (tmp_path / "IMPORTED").exists()
    assert "server_side_effect" not in sys.modules
