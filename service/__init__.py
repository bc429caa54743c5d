"""Control plane of cpsweep: sweep specs, the Tune scheduler, tracking, accounting, jobs, API, CLI."""
