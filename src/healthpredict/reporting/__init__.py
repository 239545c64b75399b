"""Reporting: plots and dashboards."""
