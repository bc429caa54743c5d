"""train.loop: field checks, import errors naming the field, a loop run in-process."""

from __future__ import annotations

import json
import textwrap

import pytest
from pydantic import ValidationError

from tests.reference import reference_paper_end
from trainables.core.config import TrainConfig
from trainables.core.imports import FactoryError
from trainables.run.local import train_local
from trainables.run.user_loop import load_loop

_LOOP = """
import torch
from torch import nn


def fit(ctx):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    cp = ctx.period(model)
    if ctx.config.seed == 1:
        ctx.report({"loss": 0.0})  # no step yet: an error naming the fix
    for epoch in range(cp.epoch + 1, ctx.config.epochs + 1):
        with torch.no_grad():
            model.weight.add_(torch.randn(1, 4) * 0.5 ** epoch)
        cp.step()
        ctx.report({"loss": 1.0 / epoch, "critical": int(cp.critical)})
"""


def test_loop_is_checked_as_text():
    with pytest.raises(ValidationError, match="loop"):
        TrainConfig(loop="my loop.py")
    assert TrainConfig(loop="pkg.mod:fit").loop == "pkg.mod:fit"


def test_import_errors_name_the_field(tmp_path):
    with pytest.raises(FactoryError, match=r"train\.loop: module 'no_such_mod_x'"):
        load_loop("no_such_mod_x:fit", [str(tmp_path)])
    with pytest.raises(FactoryError, match=r"train\.loop: 'math:pi' is a float"):
        load_loop("math:pi")


def test_cpsweep_train_runs_a_users_loop_in_process(tmp_path, monkeypatch):
    (tmp_path / "my_loop.py").write_text(textwrap.dedent(_LOOP))
    monkeypatch.setenv("CPSWEEP_IMPORT_PATH", str(tmp_path))
    cfg = TrainConfig(loop="my_loop:fit", epochs=8)
    summary = train_local(cfg, tmp_path / "out")
    rows = [json.loads(ln) for ln in (tmp_path / "out" / "history.jsonl").read_text().splitlines()]
    end = reference_paper_end([r["rotation/mean"] for r in rows], 8)
    assert end is not None and (summary["cp_end_epoch"], summary["switch_epoch"]) == (end, end + 1)
    assert [r["critical"] for r in rows] == [int(e < end) for e in range(1, 9)]
    assert [r["loss"] for r in rows] == [1.0 / e for e in range(1, 9)]
    with pytest.raises(ValueError, match=r"call cp\.step\(\)"):
        train_local(TrainConfig(loop="my_loop:fit", epochs=8, seed=1), tmp_path / "out2")


_RESUMABLE = """
import torch
from pathlib import Path
from torch import nn


def fit(ctx):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    cp = ctx.period(model)
    if ctx.checkpoint:
        model.load_state_dict(torch.load(Path(ctx.checkpoint, "model.pt")))
    for epoch in range(cp.epoch + 1, ctx.config.epochs + 1):
        with torch.no_grad():
            model.weight.add_(torch.randn(1, 4, generator=torch.Generator().manual_seed(epoch)) * 0.5 ** epoch)
        cp.step()
        d = Path(ctx.config.data.root, f"ckpt{epoch}")
        d.mkdir()
        torch.save(model.state_dict(), d / "model.pt")
        ctx.report({"loss": 1.0 / epoch}, checkpoint_dir=d)
        if epoch == 4 and ctx.config.seed == 1:
            return  # "killed" after epoch 4's report
"""


class _Session:
    rank, world = 0, 1

    def __init__(self):
        import torch

        self.device = torch.device("cpu")
        self.reports = []

    def report(self, m, directory=None):
        self.reports.append(m)


class _Checkpoint:
    def __init__(self, path):
        self.path = path

    def to_directory(self):
        return str(self.path)


def test_a_users_loop_resumes_its_period_from_its_checkpoint(tmp_path, monkeypatch):
    from trainables.run.checkpoints import checkpoint_epoch, read_reports
    from trainables.run.user_loop import run_user_loop

    (tmp_path / "resumable.py").write_text(textwrap.dedent(_RESUMABLE))
    monkeypatch.setenv("CPSWEEP_IMPORT_PATH", str(tmp_path))

    def run(seed, root, checkpoint=None):
        root.mkdir()
        cfg = TrainConfig(loop="resumable:fit", epochs=9, seed=seed, data={"root": str(root)})
        session = _Session()
        run_user_loop(cfg, session, checkpoint=checkpoint, channel=None, meter=None)
        return session.reports

    whole = run(0, tmp_path / "whole")
    first = run(1, tmp_path / "first")
    assert checkpoint_epoch(tmp_path / "first" / "ckpt4") == 4
    assert [r["epoch"] for r in read_reports(tmp_path / "first" / "ckpt4")] == [1, 2, 3, 4]
    rest = run(1, tmp_path / "rest", _Checkpoint(tmp_path / "first" / "ckpt4"))
    assert [r["epoch"] for r in rest] == [5, 6, 7, 8, 9]
    key = ("rotation/mean", "cp/end_epoch", "cp/switch_epoch")
    assert [[r[k] for k in key] for r in first + rest] == [[r[k] for k in key] for r in whole]
    assert whole[-1]["cp/switch_epoch"] == whole[-1]["cp/end_epoch"] + 1
