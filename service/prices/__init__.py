"""Versioned device price tables (JSON), read by service.accounting."""
