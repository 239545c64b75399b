"""Helpers and fixtures shared by more than one test folder (fixtures: see tests/conftest.py)."""
