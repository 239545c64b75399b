"""Orchestrator-agnostic flows: the CLI, Airflow and tests call these, and only these."""
