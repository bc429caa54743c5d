"""Control plane of cpsweep, in layers that import only downward (docs/architecture.md,
"Layout"): the spec layer (this package's modules), tracking/ (MLflow), reporting/
(`cpsweep report`), sweeps/ (Ray Tune), jobs/ (Ray Jobs), api/ (`cpsweep serve`), then the
entry points cli.py and job_entry.py."""
