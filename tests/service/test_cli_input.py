"""Every spec or usage error of the CLI is one line naming the file or field, exit 2.

Files that are not UTF-8, missing, directories, not plain data (tags, aliases, duplicate
keys), and a data root the cluster refuses: `cpsweep run | train | submit | detect`
answer each with one line on stderr and no traceback. Most run in-process (`main`),
which returns the exit code the command would; two run the real command.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.cli import main
from tests.servers import base_env
from tests.trainables.test_specdata import billion_laughs
from trainables.data.dataroots import DATA_ROOTS_ENV

CPSWEEP = str(Path(sys.executable).parent / "cpsweep")
SPEC_COMMANDS = [["run"], ["train"], ["submit", "--address", "http://127.0.0.1:1"]]

BAD_FILES = {
    "not_utf8.yaml": (b"name: s\xff\n", "not UTF-8 text (byte 0xff at offset 7)"),
    "tagged.yaml": (b"name: s\ndescription: !!binary /w==\n", "YAML tag !!binary at line 2"),
    "duplicate.yaml": (b"name: a\ntrain: {epochs: 2}\nname: b\n", "duplicate key 'name'"),
    "laughs.yaml": (billion_laughs().encode(), "aliases are not accepted"),
    "list.yaml": (b"- name: s\n", "the top level must be a mapping"),
}


def _one_line_error(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"cpsweep {command}: error: "), err
    return lines[0]


@pytest.mark.parametrize("command", SPEC_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("name", [*BAD_FILES, "missing.yaml", "a_directory"])
def test_a_bad_spec_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str], name: str
) -> None:
    path = tmp_path / name
    if name == "a_directory":
        path.mkdir()
        says = "is a directory"
    elif name == "missing.yaml":
        says = "no such file"
    else:
        path.write_bytes(BAD_FILES[name][0])
        says = BAD_FILES[name][1]
    capsys.readouterr()
    assert main([command[0], str(path), *command[1:]]) == 2
    line = _one_line_error(capsys.readouterr().err, command[0])
    assert f"{path}: " in line and says in line


def test_a_refused_data_root_in_train_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "root.yaml"
    spec.write_text("name: s\ntrain: {epochs: 2, data: {name: cifar10, root: /etc}}\n")
    monkeypatch.setenv(DATA_ROOTS_ENV, str(tmp_path / "allowed"))
    capsys.readouterr()
    assert main(["train", str(spec), "--output-dir", str(tmp_path / "out")]) == 2
    line = _one_line_error(capsys.readouterr().err, "train")
    assert "data.root '/etc'" in line and DATA_ROOTS_ENV in line


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("c.csv", b"epoch,rotation\n1,0.\xff\n", "not UTF-8 text"),
        ("c.json", b"[1, 2,", "not valid JSON"),
        ("h.jsonl", b'{"rotation": 1}\n{"rotation": \n', "not valid JSON"),
    ],
)
def test_detect_reads_bad_curves_as_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, says: str
) -> None:
    (tmp_path / name).write_bytes(content)
    capsys.readouterr()
    assert main(["detect", str(tmp_path / name), "--budget", "3"]) == 2
    assert says in _one_line_error(capsys.readouterr().err, "detect")


@pytest.mark.integration
def test_the_real_command_refuses_a_non_utf8_spec_and_an_alias_bomb(tmp_path: Path) -> None:
    """Before: a traceback and exit 1; the alias bomb took 39 s and 1.5 GB to fail."""
    bad = tmp_path / "x.yaml"
    bad.write_bytes(b"name: s\xff\n")
    r = subprocess.run(
        [CPSWEEP, "run", str(bad)], env=base_env(), capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    _one_line_error(r.stderr, "run")
    bomb = tmp_path / "laughs.yaml"
    bomb.write_text(billion_laughs())
    # Measured by a small parent: a child forked from pytest would report pytest's memory.
    probe = (
        "import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); "
        "_, status, usage = os.wait4(p.pid, 0); "
        "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)"
    )
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-c", probe, CPSWEEP, "run", str(bomb)],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - t0
    code, max_kib = (int(v) for v in r.stdout.split())
    assert code == 2 and "alias" in _one_line_error(r.stderr, "run")
    assert max_kib < 100 * 1024, max_kib  # the whole process, its imports included
    assert took < 30, took  # mostly interpreter start-up; the refusal itself is instant
