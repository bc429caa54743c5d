"""Per-trial consumption: cumulative energy, CO2 and cost, and savings against baselines.

`TrialUsage` turns each reported epoch into cumulative energy (kWh), CO2 (kg)
and cost (USD) (service.tracking.accounting formulas) and keeps what the critical period
cost per sample, from which the cost of the full recipe over the same epochs is
estimated (`estimate_full_recipe`). `service.tracking.schema` names and scales
them for MLflow. Measured savings compare a trial with its
real baseline arm (same params, criterion `never`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from service.results import TrialSummary
from service.spec import BASELINE_ARM
from service.tracking import accounting
from service.tracking.schema import state_from_run

__all__ = ["TrialUsage", "device_for_price", "with_measured_baselines"]

log = logging.getLogger(__name__)

_GPU_PRICE_KEYS = (
    ("H100", "nvidia-h100"),
    ("H200", "nvidia-h100"),
    ("A100", "nvidia-a100"),
    ("L4", "nvidia-l4"),
    ("T4", "nvidia-t4"),
)


def device_for_price(device_name: str, override: str | None = None) -> str | None:
    """Price-table key for a device name ('cpu' or torch.cuda.get_device_name)."""
    if override:
        return override
    if device_name == "cpu":
        return "cpu-core"
    for needle, key in _GPU_PRICE_KEYS:
        if needle in device_name.upper():
            return key
    return None


@dataclass
class _Acc:
    last_epoch: int = 0
    seconds: float = 0.0
    samples: int = 0
    energy_kwh: float = 0.0
    co2_kg: float = 0.0
    cost_usd: float = 0.0
    crit_train_s: float = 0.0
    crit_samples: int = 0
    crit_kwh: float = 0.0
    crit_co2: float = 0.0
    crit_cost: float = 0.0
    crit_epochs: int = 0
    device: str | None = None


@dataclass
class TrialUsage:
    intensity_g_per_kwh: float
    prices: accounting.PriceTable
    device: str | None = None  # price-table key override
    energy_usd_per_kwh: float | None = None
    cpus_per_worker: int = 1
    acc: _Acc = field(default_factory=_Acc)

    @property
    def last_epoch(self) -> int:
        return self.acc.last_epoch

    def add_epoch(self, r: dict[str, Any]) -> None:
        """Account one reported epoch (`state()` holds the cumulative values)."""
        a = self.acc
        wall = float(r.get("time_this_iter_s") or r.get("time/epoch_s") or 0.0)
        kwh = float(r.get("energy/epoch_kwh") or 0.0)
        samples = int(r.get("samples") or 0)
        name = str(r.get("device/name", "cpu"))
        a.device = device_for_price(name, self.device)
        workers = int(r.get("device/workers") or 1)
        count = workers * (self.cpus_per_worker if name == "cpu" else 1)
        cost = 0.0
        if a.device is not None and a.device in self.prices.device_hour_usd:
            cost = accounting.cost_usd(
                device=a.device,
                device_count=count,
                hours=wall / 3600,
                table=self.prices,
                energy_kwh=kwh,
                energy_usd_per_kwh=self.energy_usd_per_kwh,
            )
        co2 = accounting.co2_kg(kwh, self.intensity_g_per_kwh)
        a.last_epoch = int(r["epoch"])
        a.seconds += wall
        a.samples += samples
        a.energy_kwh += kwh
        a.co2_kg += co2
        a.cost_usd += cost
        if r.get("phase") == "critical":
            train_s = float(r.get("time/train_s") or wall)
            share = min(1.0, train_s / wall) if wall > 0 else 1.0  # training's share of the epoch
            a.crit_epochs += 1
            a.crit_train_s += train_s
            a.crit_samples += samples
            a.crit_kwh += kwh * share
            a.crit_co2 += co2 * share
            a.crit_cost += cost * share

    def state(self) -> dict[str, Any]:
        """The cumulative accumulators in SI units (kWh, kg, USD, seconds)."""
        return asdict(self.acc)

    def restore(self, metrics: dict[str, float], tags: dict[str, str]) -> None:
        """Continue from a run's latest state metrics (`service.tracking.schema.state_metrics`)."""
        state = state_from_run(metrics, tags)
        if not state and "cpsweep.usage" in tags:  # runs logged before the state metrics
            state = json.loads(tags["cpsweep.usage"])
        if state:
            self.acc = _Acc(**state)

    def actual(self) -> accounting.Usage:
        a = self.acc
        return accounting.Usage(a.seconds, a.samples, a.energy_kwh, a.co2_kg, a.cost_usd)

    def baseline_estimate(self) -> dict[str, float]:
        """The full recipe over the same epochs, extrapolated from the critical period."""
        a = self.acc
        if a.crit_epochs == 0 or a.crit_samples == 0:
            return {}
        critical = accounting.Usage(
            a.crit_train_s, a.crit_samples, a.crit_kwh, a.crit_co2, a.crit_cost
        )
        full = round(a.crit_samples / a.crit_epochs * a.last_epoch)
        est = accounting.estimate_full_recipe(
            actual=self.actual(), critical=critical, full_recipe_samples=max(full, a.samples)
        )
        return {
            "seconds": est.seconds,
            "samples": est.samples,
            "energy_kwh": est.energy_kwh,
            "co2_kg": est.co2_kg,
            "cost_usd": est.cost_usd,
        }

    def estimated_savings(self) -> dict[str, float]:
        est = self.baseline_estimate()
        if not est:
            return {}
        base = accounting.Usage(
            est["seconds"], int(est["samples"]), est["energy_kwh"], est["co2_kg"], est["cost_usd"]
        )
        return accounting.savings_pct(self.actual(), base)

    def totals(self) -> dict[str, Any]:
        a = self.acc
        return {
            "energy_kwh": a.energy_kwh,
            "co2_kg": a.co2_kg,
            "cost_usd": a.cost_usd,
            "billed_s": a.seconds,
            "price_device": a.device,
        }


def _summary_usage(t: TrialSummary) -> accounting.Usage:
    """What a trial of the sweep summary consumed (TrialUsage.totals, samples)."""
    return accounting.Usage(
        t.billed_s or 0.0, t.samples, t.energy_kwh or 0.0, t.co2_kg or 0.0, t.cost_usd or 0.0
    )


def _key(t: TrialSummary) -> str:
    return json.dumps(t.params, sort_keys=True)


def with_measured_baselines(trials: list[TrialSummary]) -> list[TrialSummary]:
    """`trials`, each paired with its `baseline` arm (same params) and given measured
    savings and the headline's difference (the tracking callback logs them to the runs)."""
    baselines = {_key(t): t for t in trials if t.arm == BASELINE_ARM and t.status != "ERROR"}
    out = []
    for t in trials:
        b = baselines.get(_key(t))
        if b is None or b is t or t.status == "ERROR":
            out.append(t)
            continue
        delta = None if t.final_val is None or b.final_val is None else t.final_val - b.final_val
        update = {
            "baseline_trial_id": b.trial_id,
            "savings_measured_pct": accounting.savings_pct(_summary_usage(t), _summary_usage(b)),
            "val_delta_vs_baseline": delta,
        }
        out.append(t.model_copy(update=update))
    return out
