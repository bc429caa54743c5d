"""The entrypoint of submitted jobs: decodes the inline spec next to the results, then runs it."""

from __future__ import annotations

import base64

import pytest

from service.job_entry import job_entry
from service.jobs import SPEC_ENV


def test_without_the_spec_variable_it_says_how_to_submit(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv(SPEC_ENV, raising=False)
    assert job_entry(["--output-dir", str(tmp_path / "out")]) == 2
    assert "submit with `cpsweep submit`" in capsys.readouterr().err


def test_the_decoded_spec_is_kept_and_validated(tmp_path, monkeypatch, capsys) -> None:
    spec = b"name: t\ntrain: {epochs: 0}\n"  # epochs must be >= 2: fails before Ray starts
    monkeypatch.setenv(SPEC_ENV, base64.b64encode(spec).decode())
    out = tmp_path / "out"
    assert job_entry(["--output-dir", str(out)]) == 2
    assert (out / "submitted_spec.yaml").read_bytes() == spec
    assert "train.epochs" in capsys.readouterr().err


def test_output_dir_is_required() -> None:
    with pytest.raises(SystemExit):
        job_entry([])
