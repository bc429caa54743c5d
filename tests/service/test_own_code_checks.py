"""Own code is checked before anything starts: train.loop's signature, factory signatures,
augmentations and params in a spec; `--set` with an unknown field names the closest one."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from service.api.allowlists import policy_problems
from service.cli import main
from service.spec import SweepSpec
from service.usercode import preflight, runtime_env_for
from tests.servers import base_env
from trainables.core.imports import IMPORT_PATH_ENV, FactoryError
from trainables.core.policy import Policy

CPSWEEP = str(Path(sys.executable).parent / "cpsweep")

USER_CODE = """
def fit():                      # cpsweep passes ctx
    pass


def fit_ok(ctx):
    raise RuntimeError("a trial would run this")


def model_without_shape(hidden=8):
    pass


def augment(x, g):
    return x


def augment_one_arg(x):
    return x
"""


@pytest.fixture
def spec_dir(tmp_path, monkeypatch):
    (tmp_path / "owncode.py").write_text(textwrap.dedent(USER_CODE))
    monkeypatch.setenv(IMPORT_PATH_ENV, str(tmp_path))
    return tmp_path


def _err_line(err: str, command: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"cpsweep {command}: error: "), err
    return lines[0]


@pytest.mark.parametrize("command", ["run", "train"])
def test_a_loop_without_ctx_fails_before_anything_starts(spec_dir, capsys, command):
    spec = spec_dir / "s.yaml"
    spec.write_text("name: s\ntrain: {epochs: 2, loop: 'owncode:fit'}\n")
    capsys.readouterr()
    assert main([command, str(spec), "--output-dir", str(spec_dir / "out")]) == 2
    line = _err_line(capsys.readouterr().err, command)
    assert "error: train.loop: owncode:fit()" in line and "ctx: cpsweep.LoopContext" in line
    assert not (spec_dir / "out").exists()  # nothing ran


def test_model_factory_signature_errors_say_what_cpsweep_passes(spec_dir):
    spec = SweepSpec.model_validate(
        {"name": "s", "train": {"model": {"factory": "owncode:model_without_shape"}}}
    )
    with pytest.raises(FactoryError, match=r"^model\.factory: .*input_shape=.*num_classes="):
        preflight(spec)


def test_augment_fns_are_preflighted_shipped_and_policed(spec_dir):
    good = SweepSpec.model_validate(
        {"name": "s", "train": {"recipe": {"after": {"augment_fn": "owncode:augment"}}}}
    )
    assert preflight(good) == 1
    assert runtime_env_for(good, spec_dir) == {"env_vars": {IMPORT_PATH_ENV: "."}}
    bad = SweepSpec.model_validate(
        {
            "name": "s",
            "search_space": {"recipe.critical.augment_fn": {"choice": ["owncode:augment_one_arg"]}},
        }
    )
    with pytest.raises(FactoryError, match=r"^recipe\.critical\.augment_fn: .*fn\(x, g\)"):
        preflight(bad)
    refused = list(policy_problems(bad, Policy(("allowed_pkg",))))
    assert [p[0] for p in refused] == [["search_space", "recipe.critical.augment_fn", "choice", 0]]
    assert "recipe.critical.augment_fn" in refused[0][2]


def test_params_sweep_like_any_field():
    spec = SweepSpec.model_validate(
        {
            "name": "s",
            "train": {"loop": "owncode:fit_ok", "params": {"hidden": 64}},
            "search_space": {"params.hidden": {"grid": [32, 64]}, "params.new": {"choice": [1]}},
        }
    )
    assert spec.train.params == {"hidden": 64}
    with pytest.raises(ValueError, match=r"params.*not plain data|finite"):
        SweepSpec.model_validate({"name": "s", "arms": {"a": {"params.x": float("nan")}}})


@pytest.mark.parametrize(
    ("command", "override", "says"),
    [
        ("run", "epochs=10", "'train.epochs'"),
        ("run", "train.optim.lrr=0.1", "'train.optim.lr'"),
        ("train", "epoch=10", "'epochs'"),
    ],
)
def test_set_with_an_unknown_field_names_the_closest(tmp_path, capsys, command, override, says):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\ntrain: {epochs: 2}\n" if command == "run" else "epochs: 2\n")
    capsys.readouterr()
    assert main([command, str(spec), "--set", override]) == 2
    line = _err_line(capsys.readouterr().err, command)
    assert f"unknown field (did you mean {says}?)" in line


@pytest.mark.integration
def test_cpsweep_train_with_a_bad_loop_prints_one_line(spec_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 2\nloop: 'owncode:fit'\n")
    r = subprocess.run(
        [CPSWEEP, "train", str(cfg), "--output-dir", str(tmp_path / "out")],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "train.loop:" in _err_line(r.stderr, "train")
