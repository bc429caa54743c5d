"""Accounting formulas against hand-computed values and an independent reimplementation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.tracking.accounting import (
    DEFAULT_CARBON_TABLE,
    DEFAULT_PRICE_TABLE,
    PriceTable,
    Usage,
    carbon_intensity_g_per_kwh,
    co2_kg,
    cost_usd,
    estimate_full_recipe,
    load_carbon_intensity_table,
    load_price_table,
    savings_pct,
)

TABLE = PriceTable(
    version="test",
    source="hand-made",
    date="2026-11-01",
    device_hour_usd={"cpu-core": 0.05, "nvidia-a100": 3.0},
    energy_usd_per_kwh=None,
)


# ---------------------------------------------------------------- CO2


def test_co2_two_kwh_at_400_g_is_0_8_kg():
    assert co2_kg(2.0, 400.0) == pytest.approx(0.8)


def test_co2_zero_energy_is_zero():
    assert co2_kg(0.0, 480.0) == 0.0


@pytest.mark.parametrize("energy, intensity", [(-1.0, 400.0), (1.0, -5.0), (float("nan"), 1.0)])
def test_co2_rejects_negative_or_nan(energy, intensity):
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        co2_kg(energy, intensity)


def test_explicit_intensity_wins_over_country():
    assert carbon_intensity_g_per_kwh("FRA", g_per_kwh=123.0) == 123.0


def test_country_intensity_comes_from_the_shipped_table():
    raw = json.loads(DEFAULT_CARBON_TABLE.read_text())["g_per_kwh"]
    assert carbon_intensity_g_per_kwh("FRA") == raw["FRA"]
    assert carbon_intensity_g_per_kwh("usa") == raw["USA"]  # case-insensitive
    assert carbon_intensity_g_per_kwh() == raw["WORLD"]  # no code: world average
    # France's nuclear/hydro grid is far cleaner than Poland's coal grid.
    assert carbon_intensity_g_per_kwh("FRA") < 100 < 500 < carbon_intensity_g_per_kwh("POL")


def test_unknown_country_names_the_code_and_lists_known_ones():
    with pytest.raises(ValueError, match=r"'ATL'.*'DEU'.*'WORLD'"):
        carbon_intensity_g_per_kwh("ATL")


def test_carbon_table_names_source_and_year():
    table = load_carbon_intensity_table()
    assert table.data_year == 2023
    assert "Ember" in table.source
    assert len(table.g_per_kwh) >= 13 and "WORLD" in table.g_per_kwh


# ---------------------------------------------------------------- cost


def test_cost_device_hours_times_price():
    # 2 A100 for 1.5 h at $3/h = $9
    assert cost_usd(device="nvidia-a100", device_count=2, hours=1.5, table=TABLE) == pytest.approx(
        9.0
    )


def test_cost_adds_explicit_energy_price():
    # 4 cores x 2 h x $0.05 = $0.40, plus 3 kWh x $0.20 = $0.60
    got = cost_usd(
        device="cpu-core",
        device_count=4,
        hours=2.0,
        table=TABLE,
        energy_kwh=3.0,
        energy_usd_per_kwh=0.20,
    )
    assert got == pytest.approx(1.0)


def test_cost_uses_table_energy_price_when_set_and_ignores_energy_when_not():
    with_energy = PriceTable("t", "s", "2026-11-01", {"cpu-core": 0.0}, energy_usd_per_kwh=0.5)
    assert cost_usd(
        device="cpu-core", device_count=1, hours=1.0, table=with_energy, energy_kwh=4.0
    ) == pytest.approx(2.0)
    # explicit price overrides the table's
    assert cost_usd(
        device="cpu-core",
        device_count=1,
        hours=1.0,
        table=with_energy,
        energy_kwh=4.0,
        energy_usd_per_kwh=0.25,
    ) == pytest.approx(1.0)
    # no energy price anywhere: energy is included in the device price
    assert cost_usd(device="cpu-core", device_count=1, hours=1.0, table=TABLE, energy_kwh=4.0) == (
        pytest.approx(0.05)
    )


def test_unknown_device_names_it_and_the_known_devices():
    with pytest.raises(ValueError, match=r"'tpu-v5'.*'cpu-core'.*'nvidia-a100'"):
        cost_usd(device="tpu-v5", device_count=1, hours=1.0, table=TABLE)


# ---------------------------------------------------------------- price table


def test_shipped_price_table_loads_with_source_and_devices():
    table = load_price_table()
    assert table.version == "2026-11" and table.date == "2026-11-01"
    assert {"cpu-core", "nvidia-a100", "nvidia-h100", "nvidia-t4", "nvidia-l4"} <= set(
        table.device_hour_usd
    )
    assert "aws.amazon.com" in table.source
    # Sanity of the ordering: a CPU core < T4 < L4 < A100 < H100 per hour.
    p = table.device_hour_usd
    assert p["cpu-core"] < p["nvidia-t4"] < p["nvidia-l4"] < p["nvidia-a100"] < p["nvidia-h100"]
    assert load_price_table(DEFAULT_PRICE_TABLE) == table


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(data))
    return path


def _valid() -> dict:
    return {
        "version": "x",
        "source": "y",
        "date": "2026-11-01",
        "device_hour_usd": {"cpu-core": 0.1},
        "energy_usd_per_kwh": None,
    }


@pytest.mark.parametrize("key", ["version", "source", "date", "device_hour_usd"])
def test_price_table_missing_key_names_file_and_key(tmp_path, key):
    data = _valid()
    del data[key]
    path = _write(tmp_path, data)
    with pytest.raises(ValueError, match=rf"prices\.json: missing key '{key}'"):
        load_price_table(path)


@pytest.mark.parametrize(
    "patch, key",
    [
        ({"device_hour_usd": {"cpu-core": -0.1}}, "device_hour_usd.cpu-core"),
        ({"device_hour_usd": {"cpu-core": "cheap"}}, "device_hour_usd.cpu-core"),
        ({"device_hour_usd": {"cpu-core": True}}, "device_hour_usd.cpu-core"),
        ({"energy_usd_per_kwh": -0.3}, "energy_usd_per_kwh"),
        ({"date": "November"}, "date"),
        ({"device_hour_usd": {}}, "device_hour_usd"),
        ({"energy_usd_per_kWh": 0.3}, "energy_usd_per_kWh"),  # typo'd key
    ],
)
def test_price_table_bad_values_name_file_and_key(tmp_path, patch, key):
    path = _write(tmp_path, {**_valid(), **patch})
    with pytest.raises(ValueError, match=rf"prices\.json: .*'{key}'"):
        load_price_table(path)


def test_price_table_not_json(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"prices\.json: not valid JSON"):
        load_price_table(path)


def test_price_table_energy_price_is_read(tmp_path):
    table = load_price_table(_write(tmp_path, {**_valid(), "energy_usd_per_kwh": 0.15}))
    assert table.energy_usd_per_kwh == 0.15


# ---------------------------------------------------------------- baseline estimate


def test_estimate_full_recipe_worked_example():
    # Critical period: 3 epochs at repeats=3 over 1000 images -> 9000 samples in 90 s,
    # 0.009 kWh, 0.0036 kg, $0.018. Whole trial: 9000 + 7 epochs x 1000 = 16000 samples.
    # The full recipe would have seen 10 x 3000 = 30000 samples, so 14000 more at
    # 0.01 s, 1e-6 kWh, 4e-7 kg and $2e-6 per sample.
    critical = Usage(seconds=90.0, samples=9000, energy_kwh=0.009, co2_kg=0.0036, cost_usd=0.018)
    actual = Usage(seconds=200.0, samples=16000, energy_kwh=0.02, co2_kg=0.008, cost_usd=0.04)
    base = estimate_full_recipe(actual=actual, critical=critical, full_recipe_samples=30000)
    assert base.samples == 30000
    assert base.seconds == pytest.approx(200.0 + 140.0)
    assert base.energy_kwh == pytest.approx(0.02 + 0.014)
    assert base.co2_kg == pytest.approx(0.008 + 0.0056)
    assert base.cost_usd == pytest.approx(0.04 + 0.028)
    s = savings_pct(actual, base)
    assert s["samples"] == pytest.approx(100 * (1 - 16000 / 30000))
    assert s["time"] == pytest.approx(100 * (1 - 200 / 340))


def _reference_estimate(actual, critical, full):
    """Straightforward per-field reimplementation, written independently."""
    if critical.samples == 0:
        return actual
    out = {}
    for field in ("seconds", "energy_kwh", "co2_kg", "cost_usd"):
        rate = getattr(critical, field) / critical.samples
        out[field] = getattr(actual, field) + rate * (full - actual.samples)
    return Usage(samples=full, **out)


@pytest.mark.parametrize(
    "actual, critical, full",
    [
        (Usage(10, 100, 1.0, 0.4, 2.0), Usage(5, 60, 0.6, 0.2, 1.1), 180),
        (Usage(3.5, 7, 0.01, 0.0, 0.0), Usage(1.5, 3, 0.005, 0.0, 0.0), 7),  # nothing halted
        (Usage(100, 1000, 2.0, 0.8, 9.0), Usage(100, 1000, 2.0, 0.8, 9.0), 3000),  # never ended
        (Usage(1, 1, 1, 1, 1), Usage(0, 0, 0, 0, 0), 10),  # no critical period measured
        (Usage(0.2, 50, 1e-6, 4e-7, 1e-5), Usage(0.1, 40, 8e-7, 3e-7, 7e-6), 10_000),
    ],
)
def test_estimate_full_recipe_matches_reference(actual, critical, full):
    got = estimate_full_recipe(actual=actual, critical=critical, full_recipe_samples=full)
    want = _reference_estimate(actual, critical, full)
    for field in ("seconds", "samples", "energy_kwh", "co2_kg", "cost_usd"):
        assert getattr(got, field) == pytest.approx(getattr(want, field)), field


def test_estimate_without_critical_samples_returns_actual():
    actual = Usage(5.0, 10, 0.1, 0.04, 0.2)
    got = estimate_full_recipe(actual=actual, critical=Usage(0, 0, 0, 0, 0), full_recipe_samples=99)
    assert got is actual


def test_estimate_rejects_full_recipe_smaller_than_actual():
    with pytest.raises(ValueError, match=r"full_recipe_samples=5 is below actual\.samples=10"):
        estimate_full_recipe(
            actual=Usage(1, 10, 0, 0, 0), critical=Usage(1, 5, 0, 0, 0), full_recipe_samples=5
        )


def test_usage_rejects_negative_fields():
    with pytest.raises(ValueError, match=r"Usage\.energy_kwh"):
        Usage(seconds=1.0, samples=1, energy_kwh=-0.1, co2_kg=0.0, cost_usd=0.0)


# ---------------------------------------------------------------- savings


def test_savings_pct_hand_computed():
    actual = Usage(seconds=60, samples=40, energy_kwh=0.5, co2_kg=0.2, cost_usd=3.0)
    base = Usage(seconds=100, samples=100, energy_kwh=1.0, co2_kg=0.25, cost_usd=3.0)
    assert savings_pct(actual, base) == pytest.approx(
        {"time": 40.0, "energy": 50.0, "co2": 20.0, "cost": 0.0, "samples": 60.0}
    )


def test_savings_pct_zero_baseline_is_zero_not_an_error():
    zero = Usage(0, 0, 0, 0, 0)
    assert savings_pct(zero, zero) == {
        "time": 0.0,
        "energy": 0.0,
        "co2": 0.0,
        "cost": 0.0,
        "samples": 0.0,
    }
    # cost not tracked (0) while time is: only time gets a percentage
    got = savings_pct(Usage(5, 5, 0, 0, 0), Usage(10, 10, 0, 0, 0))
    assert got["time"] == 50.0 and got["cost"] == 0.0


def test_savings_pct_negative_when_actual_exceeds_baseline():
    assert savings_pct(Usage(12, 1, 0, 0, 0), Usage(10, 1, 0, 0, 0))["time"] == pytest.approx(-20.0)
