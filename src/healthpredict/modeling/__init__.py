"""Modeling: train the pipeline, evaluate it honestly, track and register it."""
