"""service.resolved against a reference: every trial config of a small sweep, enumerated."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

from service.resolved import field_values
from service.spec import SweepSpec, arms_of, base_train
from trainables.core.config import ConfigError
from trainables.core.trial import train_dict_for

FIELDS = ("model.factory", "data.factory", "data.root", "loop")
SPEC: dict[str, Any] = {
    "name": "reach",
    "train": {"data": {"name": "cifar10", "root": "/base"}, "model": {"factory": "m:base"}},
    "search_space": {
        "data": {"grid": [{"name": "cifar10", "root": "/grid0"}, {"factory": "d:grid1"}]},
        "data.root": {"choice": ["/choice0", "/choice1"]},
        "model": {"choice": [{"name": "small_cnn"}, {"factory": "m:choice1"}]},
        "optim.lr": {"loguniform": [0.001, 0.1]},  # touches none of FIELDS
        "optim.momentum": {"grid": [0.0, 0.9]},
    },
    "arms": {
        "a": {"data": {"factory": "d:arm_a"}, "loop": "l:arm_a"},
        "b": {"data.root": "/arm_b"},
        "c": {"optim.lr": 0.5},
    },
    "baseline_arm": True,
}


def _every_trial(spec: SweepSpec) -> list[dict[str, Any]]:
    """Reference: the train dict of every trial Tune could create (listed values only);
    a combination that cannot be applied fails in its trial before anything is built."""
    dims = {
        p: d.grid if d.grid is not None else d.choice or [d.values_for_check()[0]]
        for p, d in spec.search_space.items()
    }
    space = {"train": base_train(spec)}
    arms = arms_of(spec)
    trials = []
    for arm in arms_of(spec) or [None]:
        for values in itertools.product(*dims.values()):
            params = dict(zip(dims, values, strict=True))
            with contextlib.suppress(ConfigError):
                trials.append(train_dict_for({**space, "arm": arm, "params": params}, arms))
    return trials


def _value(train: dict[str, Any], field: str) -> Any:
    for part in field.split("."):
        train = train.get(part) if isinstance(train, dict) else None  # type: ignore[assignment]
    return train


def test_every_value_a_trial_can_get_is_listed() -> None:
    spec = SweepSpec.model_validate(SPEC)
    trials = _every_trial(spec)
    # 4 arms (baseline included) x 2 x 2 x 2 x 2 values, less the half whose `data` grid
    # value has no `root` for the data.root choice to set (those trials fail at once).
    assert len(trials) == 4 * 2 * 2 * 2 * 2 // 2
    for field in FIELDS:
        listed = {repr(v.value) for v in field_values(spec, field)}
        reached = {repr(_value(t, field)) for t in trials}
        assert reached <= listed, (field, reached - listed)
    roots = {v.value: v.loc for v in field_values(spec, "data.root")}
    assert roots["/base"] == ("train", "data", "root")
    assert roots["/arm_b"] == ("arms", "b", "data.root")
    assert roots["/grid0"] == ("search_space", "data", "grid", 0)
    assert roots["/choice1"] == ("search_space", "data.root", "choice", 1)


def test_a_whole_section_in_an_arm_or_grid_is_seen_through() -> None:
    spec = SweepSpec.model_validate(SPEC)
    factories = {v.value: v.loc for v in field_values(spec, "data.factory")}
    assert factories["d:arm_a"] == ("arms", "a", "data")
    assert factories["d:grid1"] == ("search_space", "data", "grid", 1)
    models = {v.value for v in field_values(spec, "model.factory")}
    assert models == {"m:base", None, "m:choice1"}  # a replaced section drops the factory


def test_a_range_over_a_checked_path_is_not_listed() -> None:
    spec = SweepSpec.model_validate(
        {"name": "r", "search_space": {"optim.lr": {"uniform": [0.1, 0.2]}}}
    )
    assert all(v.listed for v in field_values(spec, "data.root"))  # not above the field
    # A range over data.root fails validation (a number is no path); built unvalidated here.
    ranged = spec.model_copy(update={"search_space": {"data.root": spec.search_space["optim.lr"]}})
    assert [v.listed for v in field_values(ranged, "data.root")] == [True, False]
