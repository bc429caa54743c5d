"""Energy used by one training process, read once per epoch.

`EnergyMeter` wraps CodeCarbon 3.x's `OfflineEmissionsTracker` in "process" mode:
one CodeCarbon task per interval (`start_task` / `stop_task`), so each `read()`
returns the energy since the previous one. Process mode attributes CPU power by
this process's (and its children's) CPU time, so several Ray workers on one host
do not double-count the CPU the way parallel machine-mode trackers do.

What CodeCarbon can and cannot see decides `EnergyReading.method`:
- "measured": the CPU energy comes from a counter (Linux RAPL, Windows EMI, Intel
  Power Gadget, Apple powermetrics) and, for GPU trials, the GPU energy from NVML.
- "estimated-tdp": any part is modelled, typically the CPU without RAPL (VMs,
  containers): CodeCarbon's TDP x CPU-load model, or our fallback below.
RAM energy is always CodeCarbon's model (about 5 W per DIMM, 10 W at least on x86).
`EnergyMeter.components` says what was used for each part.

The tracker is offline: no network, no files (unless `log_dir` is given), and no
periodic scheduler; CodeCarbon's 1 Hz load sampler runs only while a task is open.
If CodeCarbon is missing or fails, the meter falls back to a CPU-time model with
CodeCarbon's own defaults and logs one warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["FALLBACK_RAM_WATTS", "FALLBACK_WATTS_PER_BUSY_CPU", "EnergyMeter", "EnergyReading"]

logger = logging.getLogger(__name__)

# Fallback model: CodeCarbon 3.x's constants for a CPU missing from its TDP table
# (core/cpu.py DEFAULT_POWER_PER_CORE = 4 W per thread, scaled by the process's
# share of CPU time) and its RAM floor on x86 (external/ram.py: 2 DIMMs x 5 W), so
# both paths agree on machines without RAPL.
FALLBACK_WATTS_PER_BUSY_CPU = 4.0
FALLBACK_RAM_WATTS = 10.0

_J_PER_KWH = 3.6e6
# CodeCarbon CPU modes that read an energy counter instead of modelling power.
_MEASURED_CPU_MODES = frozenset({"intel_rapl", "windows_emi", "intel_power_gadget"})
_MEASURED_HARDWARE = frozenset({"AppleSiliconChip", "Raspberry"})


@dataclass(frozen=True)
class EnergyReading:
    kwh: float  # energy since the previous reading (CPU + GPU + RAM)
    cpu_kwh: float
    gpu_kwh: float
    ram_kwh: float
    seconds: float  # wall-clock time the reading covers
    method: str  # "measured", "estimated-tdp" or "disabled" (see module docstring)


def _cpu_seconds_by_pid() -> dict[int, float]:
    """User + system CPU seconds of this process and its live children."""
    try:
        import psutil
    except ImportError:
        return {os.getpid(): time.process_time()}
    me = psutil.Process()
    try:
        procs = [me, *me.children(recursive=True)]
    except psutil.Error:
        procs = [me]
    out: dict[int, float] = {}
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue  # exited or not ours
        out[p.pid] = t.user + t.system
    return out


class _CpuTimeModel:
    """Fallback estimate: CPU seconds x W per busy CPU, plus a constant RAM power."""

    def __init__(self) -> None:
        self._last = _cpu_seconds_by_pid()

    def take(self, seconds: float) -> tuple[float, float]:
        """(cpu_kwh, ram_kwh) since the previous call."""
        now = _cpu_seconds_by_pid()
        # Per pid, so a child that exits does not make the sum go backwards.
        busy = sum(max(0.0, t - self._last.get(pid, 0.0)) for pid, t in now.items())
        self._last = now
        return busy * FALLBACK_WATTS_PER_BUSY_CPU / _J_PER_KWH, (
            seconds * FALLBACK_RAM_WATTS / _J_PER_KWH
        )


def _describe_hardware(tracker: Any, use_gpu: bool) -> tuple[str, dict[str, str]]:
    """Method and per-component description from the tracker's detected hardware."""
    components = {"cpu": "none", "gpu": "none", "ram": "none"}
    cpu_measured = gpu_found = False
    for hw in getattr(tracker, "_hardware", []):
        kind = type(hw).__name__
        if kind == "CPU":
            mode = str(getattr(hw, "_mode", "unknown"))
            cpu_measured = mode in _MEASURED_CPU_MODES
            components["cpu"] = (
                mode
                if cpu_measured
                else f"{mode}: {getattr(hw, '_tdp', '?')} W TDP x CPU load "
                f"({getattr(hw, '_model', '?')})"
            )
        elif kind in _MEASURED_HARDWARE:
            cpu_measured = True
            components["cpu"] = f"{kind} counters"
        elif kind == "GPU":
            gpu_found = True
            components["gpu"] = "nvml/amdsmi" if use_gpu else "ignored (use_gpu=False)"
        elif kind == "RAM":
            components["ram"] = "CodeCarbon RAM model"
    if use_gpu and not gpu_found:
        logger.warning("EnergyMeter(use_gpu=True) but CodeCarbon found no GPU: GPU energy is 0")
    measured = cpu_measured and (gpu_found or not use_gpu)
    return ("measured" if measured else "estimated-tdp"), components


class EnergyMeter:
    """Energy of this process per interval; `start()`, then `read()` once per epoch."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        use_gpu: bool = False,
        country_iso_code: str = "USA",
        log_dir: str | None = None,
    ) -> None:
        self.enabled = enabled
        self.use_gpu = use_gpu  # False: a GPU seen by NVML is not charged to this process
        self.country_iso_code = country_iso_code  # only for CodeCarbon's own CO2 bookkeeping
        self.log_dir = log_dir  # None: CodeCarbon writes no files
        self.method = "disabled" if not enabled else "estimated-tdp"
        self.components: dict[str, str] = {}
        self._tracker: Any = None
        self._fallback: _CpuTimeModel | None = None
        self._t_last: float | None = None

    @property
    def started(self) -> bool:
        return self._t_last is not None

    def start(self) -> None:
        """Begin measuring (idempotent). The first start in a process detects the
        hardware, which takes about a second; later meters reuse CodeCarbon's cache."""
        if self.started:
            return
        if self.enabled:
            self._fallback = _CpuTimeModel()
            try:
                self._tracker = self._new_tracker()
                self._tracker.start_task()
                self.method, self.components = _describe_hardware(self._tracker, self.use_gpu)
            except Exception as e:  # CodeCarbon missing or broken: degrade, don't fail training
                self._use_fallback(e)
        self._t_last = time.perf_counter()

    def read(self) -> EnergyReading:
        """Energy since `start()` or the previous `read()`."""
        if self._t_last is None:
            raise RuntimeError("EnergyMeter.read() called before start(); call start() first")
        if not self.enabled:
            return EnergyReading(0.0, 0.0, 0.0, 0.0, 0.0, "disabled")
        cpu = gpu = ram = 0.0
        if self._tracker is not None:
            try:
                data = self._tracker.stop_task()
                if data is None:
                    raise RuntimeError("CodeCarbon stop_task() returned no data")
                cpu, gpu, ram = data.cpu_energy, data.gpu_energy, data.ram_energy
            except Exception as e:
                self._use_fallback(e)
        now = time.perf_counter()
        seconds, self._t_last = now - self._t_last, now
        assert self._fallback is not None  # set in start() whenever enabled
        fb_cpu, fb_ram = self._fallback.take(seconds)  # kept in step as a spare
        if self._tracker is None:
            cpu, gpu, ram = fb_cpu, 0.0, fb_ram
        else:
            try:
                self._tracker.start_task()
            except Exception as e:
                self._use_fallback(e)
        cpu, ram = max(0.0, cpu), max(0.0, ram)
        gpu = max(0.0, gpu) if self.use_gpu else 0.0
        return EnergyReading(cpu + gpu + ram, cpu, gpu, ram, seconds, self.method)

    def stop(self) -> None:
        """Stop measuring and release CodeCarbon's sampler thread (idempotent)."""
        tracker, self._tracker, self._t_last = self._tracker, None, None
        if tracker is not None:
            try:
                tracker.stop_task()
                tracker.stop()
            except Exception as e:
                logger.debug("CodeCarbon stop failed: %s", e)

    def _new_tracker(self) -> Any:
        from codecarbon import OfflineEmissionsTracker, OutputMethod

        # CodeCarbon's import sets its logger to INFO and the constructor logs before
        # applying log_level: quieten it first. Errors still show.
        logging.getLogger("codecarbon").setLevel(logging.ERROR)

        files = self.log_dir is not None
        if self.log_dir is not None:
            os.makedirs(self.log_dir, exist_ok=True)
        tracker = OfflineEmissionsTracker(
            country_iso_code=self.country_iso_code,
            tracking_mode="process",
            output_methods=[OutputMethod.CSV] if files else [],
            output_dir=self.log_dir or ".",
            api_call_interval=-1,  # write (if at all) only on stop, never every N samples
            # Only used by the periodic scheduler, which task-only use never starts;
            # within a task CodeCarbon samples load every 1 s and integrates at stop_task.
            measure_power_secs=60,
            log_level="error",
            allow_multiple_runs=True,  # one tracker per worker; no lock file
            project_name="cpsweep",
        )
        # CodeCarbon's __init__ swallows its own exceptions; a half-built tracker
        # lacks its hardware list.
        if not hasattr(tracker, "_hardware"):
            raise RuntimeError("CodeCarbon OfflineEmissionsTracker failed to initialise")
        return tracker

    def _use_fallback(self, error: BaseException) -> None:
        logger.warning(
            "CodeCarbon unavailable (%s: %s); estimating energy from CPU time at %.0f W per "
            "busy CPU + %.0f W RAM (method 'estimated-tdp')",
            type(error).__name__,
            error,
            FALLBACK_WATTS_PER_BUSY_CPU,
            FALLBACK_RAM_WATTS,
        )
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            with contextlib.suppress(Exception):  # best effort; already failing
                tracker.stop()
        self.method = "estimated-tdp"
        self.components = {
            "cpu": f"fallback: CPU seconds x {FALLBACK_WATTS_PER_BUSY_CPU:g} W",
            "gpu": "not measured",
            "ram": f"fallback: {FALLBACK_RAM_WATTS:g} W",
        }
