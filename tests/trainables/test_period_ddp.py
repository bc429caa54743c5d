"""CriticalPeriod under a real 2-rank gloo process group: rank 0 decides, every rank agrees."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from trainables.core.wire import Directive
from trainables.method.period import CriticalPeriod

_EPOCHS = 6


class _SyncControl:
    """Rank 0's scheduler says after epoch 3's report that the period ended at 2."""

    mode, assignment = "sync", None

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def directive(self) -> Directive | None:
        return Directive()

    def wait_verdict(self, epoch: int) -> Directive | None:
        assert self.rank == 0, "only rank 0 talks to the scheduler"
        return Directive(verdict_epoch=epoch, verdict_end=2 if epoch >= 3 else None)


def _train(cp: CriticalPeriod, ddp: nn.Module, opt: torch.optim.Optimizer) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(10 + dist.get_rank())  # each rank its own shard
    for _ in range(_EPOCHS):
        critical = cp.critical
        for _ in range(3 if critical else 1):
            opt.zero_grad()
            ddp(torch.randn(8, 4, generator=gen)).pow(2).mean().backward()
            opt.step()
        d = cp.step()
        if cp.control is not None:
            d = cp.after_report() or d
        rows.append({"critical": critical, "rotation": d.rotation, "switch": d.switch_epoch})
    return rows


def _scenario(rank: int, scenario: str) -> dict:
    torch.manual_seed(0)
    ddp = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 1)))
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    if scenario == "push":
        # Rank 0 would end at epoch 2 (fixed rule), rank 1 never: rank 0's decision holds.
        rule = "fixed" if rank == 0 else "never"
        cp = CriticalPeriod(ddp, rule, budget=_EPOCHS, fraction=2 / _EPOCHS)
    else:
        cp = CriticalPeriod(ddp, "never", control=_SyncControl(rank))
    return {"rows": _train(cp, ddp, opt), "end": cp.end_epoch}


def _rank_main(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        result = {scenario: _scenario(rank, scenario) for scenario in ("push", "sync")}
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
        # DDP's reducers must be gone, and both ranks past their last collective, before
        # gloo is torn down: a reducer outliving its process group aborts the process
        # ("terminate called without an active exception") in about 1 run in 15.
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.integration
def test_two_ranks_take_rank_zeros_decision(tmp_path):
    mp.spawn(_rank_main, args=(f"file://{tmp_path / 'pg'}", str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1  # same rotation (DDP keeps replicas equal), same decision, same recipe
    push, sync = r0["push"], r0["sync"]
    assert push["end"] == 2 and [r["switch"] for r in push["rows"]][1:] == [3] * 5
    assert [r["critical"] for r in push["rows"]] == [True, True] + [False] * 4
    assert sync["end"] == 2 and sync["rows"][2]["switch"] == 4  # verdict after epoch 3's report
    assert [r["critical"] for r in sync["rows"]] == [True] * 3 + [False] * 3
