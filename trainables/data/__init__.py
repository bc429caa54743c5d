"""Datasets (built-in, on-disk formats, user factories), splits and the recipe sampler."""
