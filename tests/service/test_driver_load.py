"""DriverLoad: the driver's load warning, fed with explicit clock values (no Ray, no Tune)."""

from __future__ import annotations

from service.sweeps.load import DriverLoad


def _feed(load: DriverLoad, seconds: float, rate: float, loop_s: float, backlog=None) -> list:
    """Results at `rate`/s for `seconds`, each taking `loop_s`; returns the warnings."""
    out, n = [], int(seconds * rate)
    start = _feed.now
    for i in range(1, n + 1):
        now = start + i / rate
        out += load.observe(now, loop_s, backlog(now) if backlog else None)
    _feed.now = start + n / rate
    return out


_feed.now = 0.0


def test_a_loop_below_its_ceiling_stays_quiet():
    _feed.now = 0.0
    load = DriverLoad(window_s=10)
    # 500 results/s x 1 ms = 50% of the loop: under the 70% line
    assert _feed(load, 60, 500, 0.001) == []


def test_nearing_the_ceiling_warns_once_with_the_numbers():
    _feed.now = 0.0
    load = DriverLoad(window_s=10)
    warnings = _feed(load, 60, 800, 0.001)  # 80% of the loop
    assert len(warnings) == 1
    w = warnings[0]
    assert "80%" in w and "1.00 ms per result" in w and "800 results/s" in w
    assert "~1000 results/s" in w and "max_concurrent" in w


def test_too_few_results_are_no_rate():
    _feed.now = 0.0
    load = DriverLoad(window_s=10, min_results=50)
    assert _feed(load, 30, 2, 0.5) == []  # 20 results a window, though 100% "busy"


def test_a_growing_backlog_warns_once_a_steady_one_never():
    _feed.now = 0.0
    load = DriverLoad(window_s=10)
    steady = _feed(load, 60, 100, 1e-5, backlog=lambda now: 5000)
    assert steady == []
    _feed.now = 0.0
    load = DriverLoad(window_s=10)
    growing = _feed(load, 60, 100, 1e-5, backlog=lambda now: int(200 * now))
    assert len(growing) == 1 and "MLflow is falling behind" in growing[0]
    assert "Nothing is lost" in growing[0]


def test_a_small_growing_backlog_is_not_yet_falling_behind():
    _feed.now = 0.0
    load = DriverLoad(window_s=10)
    # grows, but holds less than one window of results (100/s x 10 s)
    assert _feed(load, 60, 100, 1e-5, backlog=lambda now: int(now)) == []


def test_long_steps_of_tunes_loop_warn_as_a_stall():
    load = DriverLoad(window_s=10)
    quiet = [m for t in range(100) for m in load.step(t * 0.1, 0.1)]  # 0.1 s waits: normal
    assert quiet == []
    load = DriverLoad(window_s=10)
    now, out = 0.0, []
    for _ in range(20):  # a 2 s snapshot every 3 s: 67% stalled
        now += 1.0
        out += load.step(now, 0.1)
        now += 2.0
        out += load.step(now, 2.0)
    assert len(out) == 1 and "stuck in single steps" in out[0] and "longest 2.0 s" in out[0]
