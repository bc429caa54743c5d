"""The built-in architectures and `build_model` (built-in names and user factories)."""
