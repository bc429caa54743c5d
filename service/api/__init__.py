"""The REST API of `cpsweep serve`: routes, request bodies, guards, settings, allowlists."""
