"""Leaf indices of one row through LightGBM's single-row C API (``...SingleRowFast``).

``Booster.predict`` spends about 40 µs per call in Python checks and set-up before it walks a
single tree; the C API's "fast" single-row entry point keeps that set-up in a handle created
once per booster, so one row costs the tree walk plus a few microseconds. The handle holds
buffers, so calls on one handle are serialised by a lock. Results are the same leaves as
``Booster.predict(pred_leaf=True)``; the model store checks that on every model it loads.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from typing import Any

import numpy as np

_PREDICT_LEAF_INDEX = 2  # C_API_PREDICT_LEAF_INDEX
_DTYPE_FLOAT64 = 1  # C_API_DTYPE_FLOAT64


class SingleRowLeaves:
    """Leaf index per tree for one float64 row, through a reusable C-API handle."""

    def __init__(self, booster: Any) -> None:
        """Create the handle for ``booster`` (kept alive as long as this object)."""
        from lightgbm.basic import _LIB, _c_str, _safe_call  # private, stable since LightGBM 3

        self._lib, self._check = _LIB, _safe_call
        self._booster = booster  # the handle points into the booster: keep it alive
        self.n_features = int(booster.num_feature())
        self._handle = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle, ctypes.c_int(_PREDICT_LEAF_INDEX), ctypes.c_int(0),
                ctypes.c_int(-1), ctypes.c_int(_DTYPE_FLOAT64), ctypes.c_int32(self.n_features),
                _c_str("num_threads=1"), ctypes.byref(self._handle),
            )
        )  # fmt: skip
        self._out = np.empty(int(booster.num_trees()))
        self._out_pointer = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._length = ctypes.c_int64()
        self._lock = threading.Lock()
        weakref.finalize(self, _LIB.LGBM_FastConfigFree, self._handle)

    def __call__(self, row: np.ndarray) -> np.ndarray:
        """Leaf indices (int) of a contiguous float64 row of ``n_features`` values."""
        if row.shape != (self.n_features,) or row.dtype != np.float64 or not row.flags.c_contiguous:
            raise ValueError(f"expected a contiguous float64 row of {self.n_features} values")
        with self._lock:
            self._check(
                self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                    self._handle, row.ctypes.data_as(ctypes.c_void_p), ctypes.byref(self._length),
                    self._out_pointer,
                )
            )  # fmt: skip
            return self._out.astype(np.intp)
