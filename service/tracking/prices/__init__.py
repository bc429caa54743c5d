"""Versioned device price tables (JSON), read by service.tracking.accounting."""
