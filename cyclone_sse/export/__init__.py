"""Exporters: push the daemon's statistics to monitoring systems."""
