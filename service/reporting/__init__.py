"""Reporting: a sweep read back from MLflow as tables, charts and one HTML page."""
