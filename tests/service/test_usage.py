"""TrialUsage: cumulative accounting per epoch, the full-recipe estimate, measured baselines."""

from __future__ import annotations

import pytest

from service.results import TrialSummary
from service.tracking.accounting import PriceTable
from service.tracking.usage import TrialUsage, device_for_price, with_measured_baselines

PRICES = PriceTable("t", "test", "2026-11-01", {"cpu-core": 3.6, "nvidia-h100": 36.0}, None)


def _epoch(
    epoch: int,
    phase: str,
    samples: int,
    wall: float = 10.0,
    train: float = 8.0,
    kwh: float = 0.002,
    device: str = "cpu",
    workers: int = 2,
) -> dict:
    return {
        "epoch": epoch,
        "phase": phase,
        "samples": samples,
        "time_this_iter_s": wall,
        "time/train_s": train,
        "energy/epoch_kwh": kwh,
        "device/name": device,
        "device/workers": workers,
    }


def test_cumulative_energy_co2_cost():
    u = TrialUsage(intensity_g_per_kwh=500.0, prices=PRICES, cpus_per_worker=2)
    u.add_epoch(_epoch(1, "critical", 300))
    # 2 workers x 2 CPUs = 4 cores x 10 s x 3.6 $/h = 0.04 $; 0.002 kWh x 500 g = 1 g.
    assert u.state()["cost_usd"] == pytest.approx(0.04)
    assert u.state()["co2_kg"] == pytest.approx(0.001)
    u.add_epoch(_epoch(2, "after", 100))
    assert u.state()["energy_kwh"] == pytest.approx(0.004) and u.state()["seconds"] == 20
    assert u.last_epoch == 2


def test_estimate_extrapolates_the_critical_period_per_sample():
    u = TrialUsage(intensity_g_per_kwh=500.0, prices=PRICES, cpus_per_worker=1)
    u.add_epoch(_epoch(1, "critical", 300, wall=10, train=8))
    u.add_epoch(_epoch(2, "after", 100, wall=4, train=2.7))
    est = u.baseline_estimate()
    # Full recipe: 2 epochs x 300 samples; missing 200 samples at 8 s / 300 samples.
    assert est["samples"] == 600
    assert est["seconds"] == pytest.approx(14 + 200 * 8 / 300)
    sav = u.estimated_savings()
    assert sav["samples"] == pytest.approx(100 * (1 - 400 / 600))
    assert 0 < sav["time"] < sav["samples"]  # fixed per-epoch costs do not shrink


def test_state_survives_a_driver_restart():
    """From the run's latest metrics and tags (what MLflow keeps), not a JSON tag."""
    from service.tracking.schema import LAST_EPOCH_TAG, PRICE_DEVICE_TAG, state_metrics

    u = TrialUsage(intensity_g_per_kwh=500.0, prices=PRICES)
    u.add_epoch(_epoch(1, "critical", 300, kwh=0.0021234567))
    u.add_epoch(_epoch(2, "after", 100))
    tags = {LAST_EPOCH_TAG: "2", PRICE_DEVICE_TAG: "cpu-core"}
    v = TrialUsage(intensity_g_per_kwh=500.0, prices=PRICES)
    v.restore(state_metrics(u.state()), tags)
    assert v.last_epoch == 2 and v.totals()["price_device"] == "cpu-core"
    # Shown totals keep 4 significant digits; the critical period's costs are exact.
    assert v.totals()["energy_kwh"] == pytest.approx(u.totals()["energy_kwh"], rel=5e-4)
    assert v.baseline_estimate() == pytest.approx(u.baseline_estimate(), rel=5e-4)
    # A run logged before the state metrics still resumes from its JSON tag.
    import json

    w = TrialUsage(intensity_g_per_kwh=500.0, prices=PRICES)
    w.restore({}, {"cpsweep.usage": json.dumps(u.state())})
    assert w.totals() == u.totals()


def test_device_prices():
    assert device_for_price("cpu") == "cpu-core"
    assert device_for_price("NVIDIA H100 80GB HBM3") == "nvidia-h100"
    assert device_for_price("NVIDIA A100-SXM4-40GB") == "nvidia-a100"
    assert device_for_price("Some GPU") is None
    assert device_for_price("cpu", override="nvidia-t4") == "nvidia-t4"


def test_measured_savings_pair_trials_with_their_baseline():
    def trial(tid, arm, samples, secs, val):
        return TrialSummary(
            trial_id=tid,
            arm=arm,
            params={"seed": 0},
            status="TERMINATED",
            samples=samples,
            billed_s=secs,
            energy_kwh=secs / 1000,
            co2_kg=secs / 2000,
            cost_usd=secs / 100,
            final_val=val,
        )

    a, b = with_measured_baselines(
        [trial("a", "cp", 400, 60.0, 0.30), trial("b", "baseline", 900, 120.0, 0.25)]
    )
    assert a.baseline_trial_id == "b"
    assert a.savings_measured_pct["time"] == pytest.approx(50.0)
    assert a.val_delta_vs_baseline == pytest.approx(0.05)  # the headline, e.g. val/loss
    assert b.savings_measured_pct is None
