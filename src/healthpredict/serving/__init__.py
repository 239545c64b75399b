"""The prediction service: FastAPI over the registered champion (see docs/serving.md)."""
