"""Delivery: build the service image, push it, roll it out, verify it, then promote the model.

The delivery DAG calls these functions, one per task; the commands (docker, kubectl, aws) come
from settings, and a dry run records them in the journal instead of running them.
"""
