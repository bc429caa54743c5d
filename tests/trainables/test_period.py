"""CriticalPeriod: the public object at the epoch boundary, against direct computations."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from tests.reference import reference_paper_end
from trainables.core.config import ConfigError
from trainables.core.wire import (
    ANGLE,
    END_EPOCH,
    ROTATION_MEAN,
    SWITCH_EPOCH,
    Directive,
)
from trainables.method.criteria import end_epoch
from trainables.method.decide import ruling, switch_epoch_for
from trainables.method.period import CriticalPeriod


class _Net(nn.Module):
    """Conv, attention, LayerNorm and Linear: every kind of parameter the default sees or skips."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3)
        self.norm = nn.LayerNorm(4)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 3)


def _kernels(net: _Net) -> dict[str, torch.Tensor]:
    """What the paper monitors, written out by hand: Conv/Linear kernels and attention's."""
    return {
        "conv": net.conv.weight,
        "attn.in_proj": net.attn.in_proj_weight,
        "attn.out_proj": net.attn.out_proj.weight,
        "head": net.head.weight,
    }


def _direct(w: torch.Tensor, w0: np.ndarray) -> float:
    a, b = w.detach().double().numpy().ravel(), w0.ravel()
    return float(1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _epoch(net: nn.Module, epoch: int, gen: torch.Generator) -> None:
    """A stand-in for training: drifts shrinking with the epoch, so rotation saturates."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.6 * 0.7**epoch)


def test_plain_loop_matches_direct_rotation_and_the_paper_rule():
    torch.manual_seed(0)
    net, gen, budget = _Net(), torch.Generator().manual_seed(1), 12
    init = {k: w.detach().double().numpy().copy() for k, w in _kernels(net).items()}
    cp = CriticalPeriod(net, "paper", budget=budget)
    curve, critical = [], []
    for epoch in range(1, budget + 1):
        critical.append(cp.critical)
        _epoch(net, epoch, gen)
        d = cp.step()
        direct = {k: _direct(w, init[k]) for k, w in _kernels(net).items()}
        assert d.layers == pytest.approx(direct, rel=1e-5)  # MHA in_proj counted, norm not
        assert d.rotation == pytest.approx(np.mean(list(direct.values())), rel=1e-5)
        curve.append(d.rotation)
        assert (d.value is None) == (epoch < 5)  # the window (5) fills at epoch 5
    end = reference_paper_end(curve, budget)
    assert end is not None and 5 <= end < budget
    assert (cp.end_epoch, cp.switch_epoch) == (end, end + 1)
    # critical through the end epoch, not from the switch epoch on
    assert critical == [e <= end for e in range(1, budget + 1)]
    m = d.metrics()
    assert (m[END_EPOCH], m[SWITCH_EPOCH], m[ROTATION_MEAN]) == (end, end + 1, d.rotation)
    assert ANGLE in m and "rotation/attn.in_proj" in m


@pytest.mark.parametrize("name", ["relative", "fixed", "never"])
def test_every_rule_ends_where_the_batch_rule_does(name):
    torch.manual_seed(0)
    net, gen = _Net(), torch.Generator().manual_seed(2)
    cp = CriticalPeriod(net, name, budget=16, ratio=0.5, fraction=0.25)
    for epoch in range(1, 17):
        _epoch(net, epoch, gen)
        cp.step()
    want = end_epoch(name, cp.rule.history, 16, ratio=0.5, fraction=0.25)
    assert cp.end_epoch == want and cp.switch_epoch == (want + 1 if want else None)
    if name == "fixed":
        assert want == 4


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    net, gen = _Net(), torch.Generator().manual_seed(3)
    cp = CriticalPeriod(net, "paper", budget=12)
    for epoch in range(1, 5):
        _epoch(net, epoch, gen)
        cp.step()
    state = json.loads(json.dumps({k: v for k, v in cp.state_dict().items() if k != "rotation"}))
    state["rotation"] = cp.state_dict()["rotation"]
    clone = copy.deepcopy(net)
    restored = CriticalPeriod(clone, "never")  # its own snapshot and rule are replaced
    restored.load_state_dict(state)
    assert restored.criterion.name == "paper" and restored.epoch == 4
    for epoch in range(5, 13):
        noise = torch.Generator().manual_seed(epoch)
        _epoch(net, epoch, noise)
        _epoch(clone, epoch, torch.Generator().manual_seed(epoch))
        a, b = cp.step(), restored.step()
        assert (a.rotation, a.value, a.end_epoch, a.switch_epoch) == (
            b.rotation,
            b.value,
            b.end_epoch,
            b.switch_epoch,
        )
    assert restored.switch_epoch is not None


def test_layers_predicate_selects_other_parameters():
    net = _Net()
    cp = CriticalPeriod(net, "never", layers=lambda name, p: name.startswith("norm."))
    assert cp.rotation.names == ["norm", "norm.bias"]
    with pytest.raises(ValueError, match="selected by layers="):
        CriticalPeriod(net, "never", layers=lambda name, p: False)


def test_scheduler_imposed_switch_and_manual_end():
    net, gen = _Net(), torch.Generator().manual_seed(4)
    cp = CriticalPeriod(net, "never")
    for epoch in range(1, 4):
        _epoch(net, epoch, gen)
        cp.step()
    cp.end(switch_epoch=2)  # a cohort median already past: never an epoch already trained
    assert (cp.end_epoch, cp.switch_epoch, cp.critical) == (3, 4, False)
    cp.end(switch_epoch=9)  # ignored: the period has ended
    assert cp.switch_epoch == 4
    other = CriticalPeriod(_Net(), "never")
    other.end()
    assert (other.end_epoch, other.switch_epoch, other.critical) == (0, 1, False)


def test_ruling_per_mode():
    cohort = Directive(switch_epoch=7, switch_source="cohort")
    verdict = Directive(verdict_epoch=6, verdict_end=4)
    assert ruling("push", 5, 5, None).switch == 6  # own end, zero lag
    assert ruling("push", 6, 5, None).switch == 7  # never an epoch already trained
    assert ruling("push", 6, None, cohort).source == "cohort"
    assert ruling("sync", 6, 5, None) is None  # sync waits for the scheduler
    assert ruling("async", 6, None, verdict).switch == 7  # late: lag 2
    assert ruling("sync", 6, None, verdict, after_report=True).end == 4
    assert ruling("sync", 7, None, verdict, after_report=True) is None  # not judged yet
    assert switch_epoch_for(9, forced=7) == 10 and switch_epoch_for(3, end=3) == 4


def test_bad_criterion_names_the_field():
    with pytest.raises(ConfigError, match=r"criterion\.window"):
        CriticalPeriod(_Net(), "paper", budget=10, window=1)
    with pytest.raises(ConfigError, match="budget=None"):
        CriticalPeriod(_Net(), "paper")
    with pytest.raises(ConfigError, match=r"criterion\.name"):
        CriticalPeriod(_Net(), "papr", budget=10)
