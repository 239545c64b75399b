"""Health Predict: 30-day readmission risk for diabetic inpatients, with its MLOps lifecycle."""

__version__ = "0.1.0"
