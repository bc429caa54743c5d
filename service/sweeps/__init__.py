"""Sweeps: running a SweepSpec on Ray Tune (the scheduler, the control actor, progress)."""
