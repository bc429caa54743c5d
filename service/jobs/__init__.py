"""Jobs: sweeps submitted to a Ray cluster as Ray Jobs, followed and stopped from here."""
