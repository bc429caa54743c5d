"""Below every other layer: wire names, the trial's config models, import paths, registries."""
