"""EnergyMeter around real CPU work: CodeCarbon path, fallback path, disabled meter."""

from __future__ import annotations

import logging
import sys
import time

import pytest
import torch

from trainables.run.energy import (
    FALLBACK_RAM_WATTS,
    FALLBACK_WATTS_PER_BUSY_CPU,
    EnergyMeter,
    EnergyReading,
)

METHODS = {"measured", "estimated-tdp"}


def _busy(seconds: float) -> None:
    """Matrix multiplies until `seconds` of wall time have passed."""
    a = torch.randn(256, 256)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = torch.tanh(a @ a)


def _check_sums(r: EnergyReading) -> None:
    assert r.kwh == pytest.approx(r.cpu_kwh + r.gpu_kwh + r.ram_kwh)
    assert min(r.cpu_kwh, r.gpu_kwh, r.ram_kwh) >= 0.0


def test_meter_measures_busy_loop_and_reads_are_disjoint(caplog):
    t_start = time.perf_counter()
    meter = EnergyMeter(use_gpu=False)
    meter.start()
    meter.start()  # idempotent
    try:
        _busy(0.5)
        t_first = time.perf_counter()
        first = meter.read()
        time.sleep(0.3)  # idle: CPU energy should be far lower than while busy
        second = meter.read()
        t_end = time.perf_counter()
    finally:
        meter.stop()

    assert first.method in METHODS and meter.method == first.method
    assert first.kwh > 0 and first.cpu_kwh > 0
    assert first.gpu_kwh == 0.0  # use_gpu=False never charges a GPU
    # Intervals are bracketed by clocks read outside the meter, so a loaded machine
    # (slow calls) cannot make these fail, but overlapping or lost intervals would.
    assert 0.5 <= first.seconds <= t_first - t_start + 1.0  # + the read itself
    _check_sums(first)
    # Two reads are consecutive, non-overlapping intervals: the second covers only the
    # sleep, not the busy loop again.
    assert 0.3 <= second.seconds <= t_end - t_first
    assert first.seconds + second.seconds <= t_end - t_start
    assert second.cpu_kwh < first.cpu_kwh / 2
    _check_sums(second)
    # No RAPL on VMs: CodeCarbon must report what it did, not claim a measurement.
    assert set(meter.components) == {"cpu", "gpu", "ram"}
    if first.method == "estimated-tdp":
        assert "rapl" not in meter.components["cpu"]
    assert not [r for r in caplog.records if r.name == "trainables.run.energy"]  # no fallback


def test_read_before_start_raises():
    with pytest.raises(RuntimeError, match=r"before start\(\)"):
        EnergyMeter().read()


def test_disabled_meter_gives_zeros():
    meter = EnergyMeter(enabled=False)
    meter.start()
    _busy(0.1)
    r = meter.read()
    meter.stop()
    assert r == EnergyReading(0.0, 0.0, 0.0, 0.0, 0.0, "disabled")


def test_fallback_when_codecarbon_cannot_be_imported(monkeypatch, caplog):
    # A None entry in sys.modules makes `import codecarbon` raise ImportError.
    monkeypatch.setitem(sys.modules, "codecarbon", None)
    meter = EnergyMeter()
    with caplog.at_level(logging.WARNING, logger="trainables.run.energy"):
        meter.start()
    try:
        cpu0 = time.process_time()
        _busy(0.4)
        r = meter.read()
        cpu_s = time.process_time() - cpu0
    finally:
        meter.stop()

    assert r.method == "estimated-tdp" and meter.components["cpu"].startswith("fallback")
    warnings = [x for x in caplog.records if x.levelno == logging.WARNING]
    assert len(warnings) == 1 and "CodeCarbon unavailable" in warnings[0].getMessage()
    assert r.kwh > 0 and r.gpu_kwh == 0.0
    _check_sums(r)
    # The documented model: CPU seconds x W per busy CPU, RAM watts x wall seconds.
    assert r.cpu_kwh == pytest.approx(cpu_s * FALLBACK_WATTS_PER_BUSY_CPU / 3.6e6, rel=0.25)
    assert r.ram_kwh == pytest.approx(r.seconds * FALLBACK_RAM_WATTS / 3.6e6, rel=1e-9)


def test_fallback_when_codecarbon_breaks_mid_run(monkeypatch):
    meter = EnergyMeter()
    meter.start()
    try:
        if meter._tracker is None:
            pytest.skip("CodeCarbon not available here; covered by the import test")

        def broken(*args, **kwargs):
            raise OSError("sensor gone")

        monkeypatch.setattr(meter._tracker, "stop_task", broken)
        _busy(0.2)
        r = meter.read()  # this interval comes from the fallback, kept in step
        _busy(0.2)
        r2 = meter.read()
    finally:
        meter.stop()
    assert r.method == r2.method == "estimated-tdp"
    assert r.cpu_kwh > 0 and r2.cpu_kwh > 0
    assert meter._tracker is None
