"""Monitoring: the prediction log and (later) drift, performance and retraining policy."""
