"""What a sweep looks like in MLflow: run names, params, metric keys and units, experiment tags.

Pure functions over plain data (a spec, a trial's config, one reported result); the
writer in `service.tracking.callback` only sends what they return. Choices follow what the
MLflow 3.17 UI does with them (checked in a real browser, tests/tracking/test_browser.py):

- The runs table prints a metric's raw value and cuts it at the column's width, so
  1.234e-5 kWh reads `0.0000123...`: per-trial quantities are logged in units that
  keep them near 1 (Wh, g, seconds) and rounded to 4 significant digits, well below
  the accuracy of any energy estimate. The parent run logs its totals under the same
  keys, so its row fills the same columns.
- Params are shown as strings: sampled floats are rounded (`0.00010000000000000002`
  becomes `0.0001`). The parent holds the sweep's own settings (fixed base config
  once, the search space as `search.<path>`); each trial holds its resolved config
  under the same keys, so a column compares the trials directly.
- The UI's landing page (GenAI overview or training runs) follows its `workflowType`
  URL parameter or the browser's last choice (local storage `mlflow.workflowType`),
  not the experiment: in 3.17.2 the experiment-kind tag is read only when a feature
  flag that the OSS build hard-wires off allows it. `service.tracking.view` builds the
  link that opens the runs, with a shared view (the sweep's trials, columns, charts)
  that the experiment holds as a tag. The experiment is still tagged with its kind
  (`mlflow.experimentKind`), for MLflow's API and UIs that honour it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from service.spec import SweepSpec, arms_of
from trainables.core.wire import (
    ANGLE,
    EPOCH,
    HANDSHAKE_S,
    LAG_EPOCHS,
    RATE_RATIO,
)

__all__ = [
    "ARM_LABELS",
    "CRITICAL",
    "EXPERIMENT_TAGS",
    "LAST_EPOCH_TAG",
    "PRICE_DEVICE_TAG",
    "STATE_KEYS",
    "USAGE_KEYS",
    "epoch_metrics",
    "estimate_metrics",
    "fmt_value",
    "legible",
    "param_key",
    "parent_params",
    "parent_totals",
    "state_from_run",
    "state_metrics",
    "trial_params",
    "trial_run_name",
    "usage_metrics",
]

# MLflow's experiment-kind tag and the value for a model-training experiment.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
# Spelled out in run names; other arm names are shown as written in the spec.
ARM_LABELS = {"cp": "critical-period", "baseline": "baseline (full recipe)"}

# 1 while the critical period's recipe runs, 0 from the switch: the period's end on a chart.
CRITICAL = "cp/critical"
# Cumulative per-trial quantities as MLflow metrics: key -> (TrialUsage accumulator, scale).
USAGE_KEYS: dict[str, tuple[str, float]] = {
    "energy/Wh": ("energy_kwh", 1000.0),
    "co2/g": ("co2_kg", 1000.0),
    "cost/usd": ("cost_usd", 1.0),
    "time/cum_s": ("seconds", 1.0),
}
# The rest of a trial's accounting state: what its critical period cost (the basis of the
# full-recipe estimate), logged every epoch; a restarted driver continues from these.
STATE_KEYS: dict[str, tuple[str, float]] = {
    **USAGE_KEYS,
    "samples/cum": ("samples", 1.0),
    "critical/epochs": ("crit_epochs", 1.0),
    "critical/train_s": ("crit_train_s", 1.0),
    "critical/samples": ("crit_samples", 1.0),
    "critical/Wh": ("crit_kwh", 1000.0),
    "critical/co2_g": ("crit_co2", 1000.0),
    "critical/usd": ("crit_cost", 1.0),
}
LAST_EPOCH_TAG, PRICE_DEVICE_TAG = "cpsweep.last_epoch", "cost.device"
_INT_STATE = {"samples", "crit_epochs", "crit_samples"}
# Result keys that are bookkeeping, not measurements (Tune's own fields and ours).
_NOT_METRICS = {
    EPOCH, "phase", "trial_id", "date", "hostname", "node_ip", "pid", "done",
    "training_iteration", "timestamp", "time_since_restore", "iterations_since_restore",
    "checkpoint_dir_name", "checkpoint_path", "config", "should_checkpoint",
    "time_total_s", "samples_total", "energy/epoch_kwh",
}  # fmt: skip
# cp/* keys that are numbers worth a chart; the others (end/switch epoch, mode) are tags.
_CP_METRICS = (ANGLE, RATE_RATIO, HANDSHAKE_S, LAG_EPOCHS)


def legible(value: float, digits: int = 4) -> float:
    """`value` rounded to `digits` significant digits (what the runs table can show)."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def fmt_value(value: Any) -> str:
    """A param value as MLflow shows it: floats rounded to 4 significant digits."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return format(value, ".4g")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(fmt_value(v) for v in value) + "]"
    return str(value)[:6000]


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# -- names and params -------------------------------------------------------------------


def _param_label(path: str, value: Any) -> str:
    """`optim.name=adam` -> `adam`, `criterion.name=paper` -> `paper rule`,
    `optim.lr=0.05` -> `lr=0.05`, `seed=1` -> `s1`."""
    leaf = path.rsplit(".", 1)[-1]
    if path == "criterion.name":
        return f"{value} rule"
    if leaf == "name":
        return str(value)
    if path == "seed":
        return f"s{value}"
    return f"{leaf}={fmt_value(value)}"


def trial_run_name(config: Mapping[str, Any], seed: int | None = None) -> str:
    """A trial's run name from what varies: arm, then searched values, then the seed.

    `{"arm": "cp", "params": {"optim.name": "adam", "optim.lr": 0.05}}`, seed 0
    -> `critical-period adam lr=0.05 s0`. Names come first so a cut-off name still
    says the most.
    """
    params = dict(config.get("params") or {})
    names = sorted(p for p in params if p.endswith(".name"))
    parts = [_param_label(p, params[p]) for p in names]
    parts += [_param_label(p, params[p]) for p in sorted(params) if p not in names and p != "seed"]
    arm = config.get("arm")
    if arm:
        parts.insert(0, ARM_LABELS.get(str(arm), str(arm)))
    if seed is None:
        seed = params.get("seed")
    if seed is not None:
        parts.append(f"s{seed}")
    return " ".join(parts) or "trial"


def _dimension_text(dim: Mapping[str, Any]) -> str:
    """`{"grid": [0.01, 0.05]}` -> `grid [0.01, 0.05]`."""
    kind, values = next((k, v) for k, v in dim.items() if v is not None)
    return f"{kind} {fmt_value(values)}"


# MLflow refuses a param or metric key with characters outside these (its _validate_key).
_NOT_IN_KEY = re.compile(r"[^\w./\- ]")


def param_key(text: str) -> str:
    """`text` as an MLflow key: each character MLflow refuses ('+', ':', ...) becomes '_'."""
    return _NOT_IN_KEY.sub("_", text)


def parent_params(spec: SweepSpec) -> dict[str, str]:
    """The sweep's own settings for its parent run.

    The fixed base config once, under the keys the trials use (a searched or
    arm-overridden path is left out: its base value is not what any trial ran), the
    search space as `search.<path>`, each arm's overrides as `arm.<name>`, and the
    sweep-level settings. The complete spec is logged beside it as `spec.json`.
    """
    train = spec.train.model_dump()
    if spec.criterion is not None:
        train["criterion"] = spec.criterion.model_dump()
    varied = set(spec.search_space)
    arms = arms_of(spec)
    for overrides in arms.values():
        varied |= set(overrides)
    out = {
        k: fmt_value(v)
        for k, v in _flatten(train).items()
        if not any(k == p or k.startswith(p + ".") for p in varied)
    }
    out.update(
        {
            f"search.{p}": _dimension_text(d.model_dump(exclude_none=True))
            for p, d in spec.search_space.items()
        }
    )
    out.update(
        {
            f"arm.{param_key(a)}": ", ".join(f"{p}={fmt_value(v)}" for p, v in sorted(o.items()))
            or "base"
            for a, o in arms.items()
        }
    )
    out.update(
        {
            "sweep.num_samples": str(spec.num_samples),
            "sweep.scheduler": f"{spec.scheduler.scope}/{spec.scheduler.mode}",
            "sweep.workers_per_trial": str(spec.scaling.num_workers),
        }
    )
    return out


def trial_params(train: Mapping[str, Any]) -> dict[str, str]:
    """A trial's resolved config, flattened, with legible floats (no `search.*` copies)."""
    return {k: fmt_value(v) for k, v in _flatten(train).items()}


# -- metrics ------------------------------------------------------------------------------


def usage_metrics(totals: Mapping[str, float]) -> dict[str, float]:
    """Cumulative accumulators (kWh, kg, USD, s) -> the legible metrics of USAGE_KEYS."""
    return {k: legible(totals[src] * scale) for k, (src, scale) in USAGE_KEYS.items()}


def state_metrics(state: Mapping[str, Any]) -> dict[str, float]:
    """A TrialUsage accumulator (SI units) -> STATE_KEYS metrics (the shown ones legible)."""
    return {
        k: legible(float(state[src]) * scale) if k in USAGE_KEYS else float(state[src]) * scale
        for k, (src, scale) in STATE_KEYS.items()
    }


def state_from_run(metrics: Mapping[str, float], tags: Mapping[str, str]) -> dict[str, Any]:
    """The inverse of `state_metrics` from a run's latest metrics and tags ({} if none)."""
    if not all(k in metrics for k in STATE_KEYS):
        return {}
    state: dict[str, Any] = {}
    for k, (src, scale) in STATE_KEYS.items():
        value = metrics[k] / scale
        state[src] = round(value) if src in _INT_STATE else value
    state["last_epoch"] = int(tags.get(LAST_EPOCH_TAG, 0))
    state["device"] = tags.get(PRICE_DEVICE_TAG)
    return state


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def epoch_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """One reported epoch's own measurements, plus `cp/critical` (1 while the critical
    period's recipe ran, 0 after the switch) so the end of the period sits on a chart
    next to rotation and `recipe/repeats`."""
    out: dict[str, float] = {}
    for k, v in result.items():
        x = _number(v)
        if x is None or k in _NOT_METRICS or (k.startswith("cp/") and k not in _CP_METRICS):
            continue
        out[k] = x
    if _number(result.get("energy/epoch_kwh")) is not None:
        out["energy/epoch_Wh"] = legible(float(result["energy/epoch_kwh"]) * 1000.0)
    if result.get("phase") in ("critical", "after"):
        out[CRITICAL] = 1.0 if result["phase"] == "critical" else 0.0
    return out


def estimate_metrics(
    estimate: Mapping[str, float], savings: Mapping[str, float]
) -> dict[str, float]:
    """The full-recipe estimate and the savings against it, logged every epoch so they
    chart as curves beside the actual `energy/Wh` and `cost/usd` of each trial."""
    out: dict[str, float] = {}
    if estimate:
        out["full_recipe_est/Wh"] = legible(estimate["energy_kwh"] * 1000.0)
        out["full_recipe_est/co2_g"] = legible(estimate["co2_kg"] * 1000.0)
        out["full_recipe_est/usd"] = legible(estimate["cost_usd"])
        out["full_recipe_est/s"] = legible(estimate["seconds"])
    out.update({f"savings/{k}_pct": round(v, 2) for k, v in savings.items()})
    return out


def parent_totals(trials: list[Mapping[str, Any]]) -> dict[str, float]:
    """The sweep's totals under the trials' own keys (its row fills the same columns),
    plus kWh and kg totals for sweeps big enough to read in those units."""
    done = [t for t in trials if t.get("energy_kwh") is not None]
    totals = {src: sum(float(t.get(src) or 0.0) for t in done) for src, _ in USAGE_KEYS.values()}
    totals["seconds"] = sum(float(t.get("billed_s") or 0.0) for t in done)
    out = usage_metrics(totals) if done else {}
    if done:
        out["total/kWh"] = legible(totals["energy_kwh"])
        out["total/co2_kg"] = legible(totals["co2_kg"])
    return out
