"""SIGTERM during a sweep reaches Tune as Ctrl-C does (Tune saves, tracking drains)."""

from __future__ import annotations

import os
import signal


def test_sigterm_is_handed_to_the_sigint_handler_while_the_sweep_runs() -> None:
    from service.sweeps.run import _sigterm_as_sigint

    seen: list[int] = []
    old_int = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    old_term = signal.getsignal(signal.SIGTERM)
    try:
        with _sigterm_as_sigint():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                if seen:
                    break
        assert seen == [signal.SIGINT]
        assert signal.getsignal(signal.SIGTERM) == old_term  # restored after the sweep
    finally:
        signal.signal(signal.SIGINT, old_int)
