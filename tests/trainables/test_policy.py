"""The policy a REST job carries, enforced where a trial imports code and reads data.

The attacker's route: the server's check is skipped (a spec injected straight into the
job, or a name the text check cannot judge), and the trial's own code path must still
refuse. A marker file that a command would `touch` shows the command did not run.
"""

from __future__ import annotations

import base64
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from service.job_entry import job_entry
from service.jobs.submit import build_submission
from service.spec import SweepSpec
from trainables.core.config import DataConfig, ModelConfig
from trainables.core.imports import IMPORT_PATH_ENV, resolve
from trainables.core.policy import POLICY_ENV, Policy, PolicyError
from trainables.data.dataroots import DATA_ROOTS_ENV, DataRootNotAllowed, check_data_root
from trainables.data.sources import load_training_data
from trainables.models.builtin import build_model
from trainables.run.user_loop import load_loop

TRAINABLES = Policy(factory_modules=("trainables",))


def _bind(monkeypatch: pytest.MonkeyPatch, policy: Policy) -> None:
    """This process as one of the job's: its environment holds the policy."""
    for key, value in policy.to_env().items():
        monkeypatch.setenv(key, value)


def _touch(marker: Path) -> DataConfig:
    """`data.factory: subprocess:run` that would create `marker`."""
    return DataConfig(factory="subprocess:run", kwargs={"args": f"touch {marker}", "shell": True})


# -- the policy as text ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("trainables.data.datasets:os.popen", "one public name"),  # walks into `os`
        ("trainables.data.datasets:_private", "one public name"),
        ("trainables.data.datasets:__builtins__", "one public name"),
        ("subprocess:run", "not under the module prefixes"),
        ("trainablesx.mod:f", "not under the module prefixes"),  # a prefix is whole parts
        ("os:system", "not under the module prefixes"),
        ("trainables", "not an import path"),
        (3, "not an import path"),
    ],
)
def test_text_check_refuses_with_field_value_and_fix(target: object, says: str) -> None:
    with pytest.raises(PolicyError) as err:
        TRAINABLES.check_target(target, "data.factory")
    msg = str(err.value)
    assert msg.startswith("data.factory: ") and says in msg
    if "prefixes" in says:
        assert "CPSWEEP_FACTORY_MODULES: trainables" in msg and "data.name" in msg


def test_text_check_accepts_a_name_under_a_prefix() -> None:
    for target in ("trainables:f", "trainables.models.builtin:small_cnn"):
        assert TRAINABLES.check_target(target, "model.factory") == target


def test_the_policy_travels_in_one_env_var_and_an_unreadable_one_refuses_all() -> None:
    policy = Policy(("trainables", "my_pkg"), ("/data/$HOME", "/srv/x"))  # `$`: base64
    assert Policy.from_env(policy.to_env()) == policy
    assert Policy.from_env({}) is None  # no policy: a CLI user's own machine
    with pytest.raises(PolicyError, match=f"{POLICY_ENV} is set but unreadable"):
        Policy.from_env({POLICY_ENV: "not base64 !"})
    bad = base64.b64encode(b'{"factory_modules": "trainables", "data_roots": []}').decode()
    with pytest.raises(PolicyError, match="unreadable"):
        Policy.from_env({POLICY_ENV: bad})


# -- the trial's code paths, server bypassed -------------------------------------------------


def test_trial_data_factory_outside_the_policy_does_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    _bind(monkeypatch, TRAINABLES)
    with pytest.raises(PolicyError, match=r"data\.factory: 'subprocess:run'"):
        load_training_data(_touch(marker), seed=0)
    escape = DataConfig(
        factory="trainables.data.datasets:os.popen", kwargs={"cmd": f"touch {marker}"}
    )
    with pytest.raises(PolicyError, match="one public name"):
        load_training_data(escape, seed=0)
    assert not marker.exists()


@pytest.mark.integration  # the user's own code runs `touch` in a subprocess
def test_without_a_policy_a_cli_user_runs_their_own_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the same factory runs on the user's own machine, so the policy is what
    stopped it above (it then fails for returning the wrong type, after running)."""
    marker = tmp_path / "ran"
    monkeypatch.delenv(POLICY_ENV, raising=False)
    with pytest.raises(Exception, match="returned a CompletedProcess"):
        load_training_data(_touch(marker), seed=0)
    assert marker.exists()


def test_a_name_the_module_only_imported_is_refused_before_it_is_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The text check passes (one plain name under an allowed prefix); what it names was
    not defined there. Checked on the object, where the code runs."""
    pkg = f"allowed_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{pkg}.py").write_text(
        textwrap.dedent("""
        import os
        from os import system
        from pathlib import Path

        def build(*, input_shape, num_classes):
            raise AssertionError("not reached in this test")
        """)
    )
    monkeypatch.setenv(IMPORT_PATH_ENV, str(tmp_path))
    _bind(monkeypatch, Policy(factory_modules=(pkg,)))
    for name, owner in (("system", "from posix"), ("os", "from no module"), ("Path", "pathlib")):
        with pytest.raises(PolicyError, match=owner):
            resolve(f"{pkg}:{name}", field="model.factory")
    assert callable(resolve(f"{pkg}:build", field="model.factory"))  # its own function
    with pytest.raises(PolicyError, match="is a type from pathlib"):
        build_model(ModelConfig(factory=f"{pkg}:Path"), input_shape=(1, 4, 4), num_classes=2)
    with pytest.raises(PolicyError, match=r"train\.loop: 'os:system'"):
        load_loop("os:system")


def test_a_refused_module_is_never_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"side_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        f"from pathlib import Path\nPath({str(tmp_path / 'imported')!r}).touch()\n"
    )
    monkeypatch.setenv(IMPORT_PATH_ENV, str(tmp_path))
    _bind(monkeypatch, TRAINABLES)
    with pytest.raises(PolicyError):
        resolve(f"{name}:build", field="model.factory")
    assert not (tmp_path / "imported").exists() and name not in sys.modules
    assert str(tmp_path) not in sys.path  # refused before the directory was added


def test_builtin_registry_entries_are_not_user_code(monkeypatch: pytest.MonkeyPatch) -> None:
    _bind(monkeypatch, Policy())  # nothing allowed; the built-in names still work
    assert (
        build_model(ModelConfig(name="small_cnn"), input_shape=(1, 8, 8), num_classes=3) is not None
    )


def test_trial_data_root_follows_the_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed = tmp_path / "data"
    (allowed / "cifar").mkdir(parents=True)
    monkeypatch.delenv(DATA_ROOTS_ENV, raising=False)  # the cluster itself lists nothing
    _bind(monkeypatch, Policy(data_roots=(str(allowed),)))
    assert check_data_root(str(allowed / "cifar")) == (allowed / "cifar").resolve()
    for root in ("/etc", str(allowed / ".." / "elsewhere")):
        with pytest.raises(DataRootNotAllowed, match="CPSWEEP_DATA_ROOTS"):
            check_data_root(root)
    _bind(monkeypatch, Policy())  # no roots in the policy: no data.root at all
    with pytest.raises(DataRootNotAllowed, match=r"accepts no data\.root"):
        check_data_root(str(allowed))


def test_a_spec_injected_into_the_job_is_refused_before_ray_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The job exactly as the REST server builds it (build_submission with its policy), but
    with a spec the server would refuse: the driver's preflight refuses it, exit 2."""
    marker = tmp_path / "pwned"
    spec = SweepSpec.model_validate(
        {
            "name": "injected",
            "train": {"epochs": 2, "data": {"name": "digits"}},
            "arms": {"a": {"data": _touch(marker).model_dump(exclude_defaults=True)}},
            "tracking": {"enabled": False},
        }
    )
    job = build_submission(
        spec, submission_id="cpsweep-injected-1", mlflow_uri=None, policy=TRAINABLES
    )
    for key, value in job["runtime_env"]["env_vars"].items():
        monkeypatch.setenv(key, value)
    assert job_entry(["--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "data.factory: 'subprocess:run'" in err and "CPSWEEP_FACTORY_MODULES" in err
    assert not marker.exists()
