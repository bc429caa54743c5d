"""trainables/run/pool.py without a cluster: the rank session, checkpoints across nodes, and
the driver's retry rule (rank groups on a real cluster: tests/ray/test_pool.py)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch

from trainables.core.config import TrainConfig
from trainables.run import pool


def _session(rank: int = 0, files: dict[str, bytes] | None = None) -> tuple[Any, list[Any]]:
    sent: list[Any] = []
    s = pool.RankSession(rank, 2, torch.device("cpu"), files, None, sent.append, OrderedDict())
    return s, sent


def test_a_checkpoint_directory_survives_packing(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "state.pt").write_bytes(b"\x00\x01")
    (tmp_path / "a" / "meta.json").write_text("{}")
    files = pool.pack_dir(tmp_path)
    assert files == {"state.pt": b"\x00\x01", "a/meta.json": b"{}"}
    out = tmp_path / "out"
    pool.unpack_dir(files, out)
    assert pool.pack_dir(out) == files


def test_rank0_sends_its_report_with_the_checkpoint_and_other_ranks_send_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "state.pt").write_bytes(b"x")
    s0, sent0 = _session(0)
    s0.report({"epoch": 1}, str(tmp_path))
    s0.report({"epoch": 2, "error": "nan"})
    assert sent0 == [
        ("report", {"epoch": 1}, {"state.pt": b"x"}),
        ("report", {"epoch": 2, "error": "nan"}, None),
    ]
    s1, sent1 = _session(1)
    s1.report({"epoch": 1}, str(tmp_path))
    assert sent1 == []


def test_the_trials_checkpoint_is_materialised_on_the_rank() -> None:
    s, _ = _session(1, {"state.pt": b"abc"})
    ckpt = s.checkpoint()
    with ckpt.as_directory() as d:
        assert (Path(d) / "state.pt").read_bytes() == b"abc"
    s.close()
    assert _session(0)[0].checkpoint() is None


def test_datasets_are_loaded_once_per_config_and_seed() -> None:
    s, _ = _session()
    cfg = TrainConfig.model_validate({"data": {"name": "digits"}, "seed": 0})
    first = s.dataset(cfg)
    assert first is not None and s.dataset(cfg) is first
    other = s.dataset(cfg.model_copy(update={"seed": 1}))
    assert other is not None and other is not first
    assert s.dataset(cfg) is first  # two kept: a sweep over two seeds does not reload


class _FakeGroup:
    """Dies (like a killed rank) after forwarding `reports_before_death` reports."""

    def __init__(self, log: list[Any], reports_before_death: int | None) -> None:
        self.log, self.n = log, reports_before_death

    def run(self, fn: Any, config: Any, files: Any, replay_after: Any, forward: Any) -> None:
        self.log.append(("start", files))
        start = int(files["epoch"]) if files else 0
        for e in range(start + 1, 6):
            if self.n is not None and e - start > self.n:
                raise pool._RankDied("rank 0 died")
            forward({"epoch": e}, {"epoch": str(e).encode()})


def _fake_groups(monkeypatch: pytest.MonkeyPatch, deaths: list[int | None]) -> list[Any]:
    log: list[Any] = []
    groups = iter([_FakeGroup(log, d) for d in deaths])
    monkeypatch.setattr(pool, "_group", lambda spec: next(groups))
    monkeypatch.setattr(pool, "release_group", lambda: log.append("release"))
    return log


_SPEC = pool.GroupSpec(num_workers=2, cpus_per_worker=1, gpus_per_worker=0.0, backend="gloo")


def test_a_dead_rank_resumes_the_trial_from_its_last_checkpoint_on_new_ranks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = _fake_groups(monkeypatch, [2, None])
    got: list[int] = []
    pool.run_on_group(
        lambda c, s: None, {}, _SPEC, forward=lambda m, f: got.append(m["epoch"]), max_failures=1
    )
    assert got == [1, 2, 3, 4, 5]  # nothing trained twice, nothing lost
    assert log == [("start", None), "release", ("start", {"epoch": b"2"})]


def test_a_rank_dying_more_often_than_allowed_fails_the_trial(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_groups(monkeypatch, [1, 1, None])
    with pytest.raises(pool.WorkerFailed, match="worker_failures=1"):
        pool.run_on_group(lambda c, s: None, {}, _SPEC, forward=lambda m, f: None, max_failures=1)


def test_an_error_on_a_rank_fails_the_trial_at_once_and_ends_the_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = _fake_groups(monkeypatch, [None])

    def forward(m: dict[str, Any], f: Any) -> None:
        raise ValueError("user code")

    with pytest.raises(ValueError, match="user code"):
        pool.run_on_group(lambda c, s: None, {}, _SPEC, forward=forward, max_failures=5)
    assert log == [("start", None), "release"]


def test_the_spec_runs_ddp_trials_on_ray_train_by_default() -> None:
    from service.spec import ScalingSpec

    assert ScalingSpec(num_workers=2).worker_pool is False  # Ray Train by default
    assert ScalingSpec(num_workers=2, worker_pool=True).worker_pool is True
