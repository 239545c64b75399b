"""The monitoring-and-retraining loop around a deployed service.

The service logs what it served (:mod:`healthpredict.monitoring.tables`); outcomes arrive
later (:mod:`.outcomes`); each monitoring window of the log (:mod:`.windows`) runs through
phase functions over an explicit context (:mod:`.context`): monitor (:mod:`.monitor`), decide,
retrain and gate (:mod:`.retrain`), commit (:mod:`.commit`), composed by :mod:`.runner`. A
model's monitoring reference travels with it (:mod:`.profile`, :mod:`.models`). The replay
(:mod:`.replay`, :mod:`.plans`, :mod:`.streams`, :mod:`.traffic`, :mod:`.service`) generates
traffic and outcomes for the same loop, through the real service.
"""
