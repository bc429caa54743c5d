"""Accounting: CO2, money, and the full-recipe baseline a halted trial is compared against.

Pure functions over plain numbers; the driver feeds them the energy each trial's
`trainables.run.energy.EnergyMeter` measured. Prices and grid carbon intensities are
versioned JSON tables under `service/tracking/prices/`, each naming its source and date,
so a report says which numbers it used.

The baseline follows the paper's comparison (Fukase et al., arXiv 2506.15954):
a trial that halts the expensive recipe at the end of its critical period is
compared with the same trial running the expensive recipe for the whole budget.
Instead of running that second arm, `estimate_full_recipe` extrapolates it from
the cost per training sample measured while the expensive recipe was on.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_CARBON_TABLE",
    "DEFAULT_PRICE_TABLE",
    "CarbonIntensityTable",
    "PriceTable",
    "Usage",
    "carbon_intensity_g_per_kwh",
    "co2_kg",
    "cost_usd",
    "estimate_full_recipe",
    "load_carbon_intensity_table",
    "load_price_table",
    "savings_pct",
]

_PRICES_DIR = Path(__file__).resolve().parent / "prices"
DEFAULT_PRICE_TABLE = _PRICES_DIR / "prices-2026-11.json"
DEFAULT_CARBON_TABLE = _PRICES_DIR / "carbon-intensity-2026.json"


# ---------------------------------------------------------------- tables


@dataclass(frozen=True)
class PriceTable:
    version: str
    source: str
    date: str  # ISO date the prices were read
    device_hour_usd: dict[str, float]  # device name -> USD per device-hour
    energy_usd_per_kwh: float | None  # None: energy is included in the device price


@dataclass(frozen=True)
class CarbonIntensityTable:
    version: str
    data_year: int  # the year the averages describe (older than `version`)
    source: str
    g_per_kwh: dict[str, float]  # ISO 3166-1 alpha-3 code (or "WORLD") -> gCO2e/kWh


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _check_keys(path: Path, data: dict[str, Any], required: set[str], optional: set[str]) -> None:
    missing = sorted(required - data.keys())
    if missing:
        raise ValueError(f"{path}: missing key {missing[0]!r} (required: {sorted(required)})")
    unknown = sorted(data.keys() - required - optional)
    if unknown:
        allowed = sorted(required | optional)
        raise ValueError(f"{path}: unknown key {unknown[0]!r} (allowed: {allowed})")


def _non_empty_str(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path}: key {key!r} must be a non-empty string, got {value!r}")
    return value


def _price(path: Path, key: str, value: Any) -> float:
    # bool is an int subclass: reject it so `true` is not read as 1 USD.
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise ValueError(f"{path}: key {key!r} must be a finite number >= 0, got {value!r}")
    return float(value)


def load_price_table(path: str | Path | None = None) -> PriceTable:
    """Read and validate a price table; the default is the one shipped with cpsweep."""
    path = Path(path) if path is not None else DEFAULT_PRICE_TABLE
    data = _read_json_object(path)
    _check_keys(
        path,
        data,
        required={"version", "source", "date", "device_hour_usd"},
        optional={"energy_usd_per_kwh", "notes"},
    )
    date = _non_empty_str(path, "date", data["date"])
    try:
        _dt.date.fromisoformat(date)
    except ValueError as e:
        raise ValueError(f"{path}: key 'date' must be an ISO date YYYY-MM-DD, got {date!r}") from e
    devices = data["device_hour_usd"]
    if not isinstance(devices, dict) or not devices:
        raise ValueError(f"{path}: key 'device_hour_usd' must be a non-empty object")
    prices = {
        _non_empty_str(path, "device_hour_usd", name): _price(path, f"device_hour_usd.{name}", v)
        for name, v in devices.items()
    }
    energy = data.get("energy_usd_per_kwh")
    return PriceTable(
        version=_non_empty_str(path, "version", data["version"]),
        source=_non_empty_str(path, "source", data["source"]),
        date=date,
        device_hour_usd=prices,
        energy_usd_per_kwh=None if energy is None else _price(path, "energy_usd_per_kwh", energy),
    )


def load_carbon_intensity_table(path: str | Path | None = None) -> CarbonIntensityTable:
    """Read and validate a carbon-intensity table; the default ships with cpsweep."""
    path = Path(path) if path is not None else DEFAULT_CARBON_TABLE
    data = _read_json_object(path)
    _check_keys(
        path,
        data,
        required={"version", "data_year", "source", "g_per_kwh"},
        optional={"unit", "notes"},
    )
    year = data["data_year"]
    if not isinstance(year, int) or isinstance(year, bool):
        raise ValueError(f"{path}: key 'data_year' must be an integer year, got {year!r}")
    table = data["g_per_kwh"]
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{path}: key 'g_per_kwh' must be a non-empty object")
    return CarbonIntensityTable(
        version=_non_empty_str(path, "version", data["version"]),
        data_year=year,
        source=_non_empty_str(path, "source", data["source"]),
        g_per_kwh={str(k).upper(): _price(path, f"g_per_kwh.{k}", v) for k, v in table.items()},
    )


@functools.lru_cache(maxsize=1)
def _default_carbon_table() -> CarbonIntensityTable:
    return load_carbon_intensity_table()


# ---------------------------------------------------------------- formulas


def _non_negative(name: str, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def carbon_intensity_g_per_kwh(
    country_iso_code: str | None = None, g_per_kwh: float | None = None
) -> float:
    """Grid carbon intensity in gCO2e/kWh.

    An explicit `g_per_kwh` wins (the user knows their data centre); otherwise the
    yearly national average of the shipped table for `country_iso_code` (ISO 3166-1
    alpha-3, e.g. "USA"), or the world average when no code is given.
    """
    if g_per_kwh is not None:
        return _non_negative("g_per_kwh", g_per_kwh)
    table = _default_carbon_table()
    code = (country_iso_code or "WORLD").strip().upper()
    if code not in table.g_per_kwh:
        raise ValueError(
            f"unknown country_iso_code {country_iso_code!r}: the carbon-intensity table "
            f"{table.version} knows {sorted(table.g_per_kwh)}; pass g_per_kwh explicitly "
            "for other grids"
        )
    return table.g_per_kwh[code]


def co2_kg(energy_kwh: float, intensity_g_per_kwh: float) -> float:
    """kg CO2e emitted by `energy_kwh` at `intensity_g_per_kwh` (g -> kg: / 1000)."""
    energy = _non_negative("energy_kwh", energy_kwh)
    return energy * _non_negative("intensity_g_per_kwh", intensity_g_per_kwh) / 1000.0


def cost_usd(
    *,
    device: str,
    device_count: int,
    hours: float,
    table: PriceTable,
    energy_kwh: float = 0.0,
    energy_usd_per_kwh: float | None = None,
) -> float:
    """Device-hours at the table's price, plus energy at `energy_usd_per_kwh`.

    The energy term uses the explicit price if given, else the table's price, else
    none: cloud device prices already include the electricity.
    """
    if device not in table.device_hour_usd:
        raise ValueError(
            f"unknown device {device!r}: price table {table.version} knows "
            f"{sorted(table.device_hour_usd)}"
        )
    if device_count < 0:
        raise ValueError(f"device_count must be >= 0, got {device_count!r}")
    total = table.device_hour_usd[device] * device_count * _non_negative("hours", hours)
    price = energy_usd_per_kwh if energy_usd_per_kwh is not None else table.energy_usd_per_kwh
    if price is not None:
        total += _non_negative("energy_kwh", energy_kwh) * _non_negative(
            "energy_usd_per_kwh", price
        )
    return total


@dataclass(frozen=True)
class Usage:
    """What a trial (or one period of it) consumed."""

    seconds: float  # wall-clock time
    samples: int  # training samples processed (repeats and all)
    energy_kwh: float
    co2_kg: float
    cost_usd: float

    def __post_init__(self) -> None:
        for name in ("seconds", "samples", "energy_kwh", "co2_kg", "cost_usd"):
            _non_negative(f"Usage.{name}", getattr(self, name))


def estimate_full_recipe(*, actual: Usage, critical: Usage, full_recipe_samples: int) -> Usage:
    """Estimate what the trial would have cost with the expensive recipe throughout.

    baseline = actual + (full_recipe_samples - actual.samples) x per-sample cost of the
    critical period (critical.X / critical.samples). Fixed per-epoch costs such as
    evaluation are paid in both arms, so they are already in `actual` and are not
    extrapolated. Without a measured critical period (critical.samples == 0) there is
    no rate to extrapolate, and `actual` is returned.
    """
    if critical.samples == 0:
        return actual
    missing = full_recipe_samples - actual.samples
    if missing < 0:
        raise ValueError(
            f"full_recipe_samples={full_recipe_samples} is below actual.samples="
            f"{actual.samples}: the full recipe cannot process fewer samples than the halted run"
        )
    scale = missing / critical.samples
    return Usage(
        seconds=actual.seconds + scale * critical.seconds,
        samples=full_recipe_samples,
        energy_kwh=actual.energy_kwh + scale * critical.energy_kwh,
        co2_kg=actual.co2_kg + scale * critical.co2_kg,
        cost_usd=actual.cost_usd + scale * critical.cost_usd,
    )


def savings_pct(actual: Usage, baseline: Usage) -> dict[str, float]:
    """Percent saved against `baseline`, 100 x (1 - actual / baseline); 0 when baseline is 0."""

    def pct(a: float, b: float) -> float:
        return 100.0 * (1.0 - a / b) if b > 0 else 0.0

    return {
        "time": pct(actual.seconds, baseline.seconds),
        "energy": pct(actual.energy_kwh, baseline.energy_kwh),
        "co2": pct(actual.co2_kg, baseline.co2_kg),
        "cost": pct(actual.cost_usd, baseline.cost_usd),
        "samples": pct(actual.samples, baseline.samples),
    }
