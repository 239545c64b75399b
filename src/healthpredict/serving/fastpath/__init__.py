"""The serving fast path: a compiled copy of the registered sklearn/LightGBM pipeline.

:func:`compile_pipeline` reads the fitted pipeline's tables and trees into a
:class:`CompiledModel` that scores plain records (or a coded columnar batch) in microseconds
instead of milliseconds, with per-row attributions from the same tree leaves. It is a copy, so
it is never trusted on its own: every load is proven equal to the pipeline by
:func:`check_parity` (to :data:`PARITY_ATOL`), and the service falls back to the pipeline when
it is not.

Modules: ``encoder`` (records to the feature matrix), ``columnar`` (the same for a coded batch),
``trees`` (boosters compiled to native code by lleaves, or LightGBM itself), ``explain`` (path
attributions from leaf tables), ``single_row`` (LightGBM's single-row C API) and ``pipeline``
(the compiled pipeline and its parity check). The names in ``__all__`` are the public API.
They are imported on first use, so that ``healthpredict.serving.fastpath.trees`` alone loads
without pandas or scikit-learn (the tree compiler's worker processes rely on it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from healthpredict.serving.fastpath.encoder import FastPathError, Record
    from healthpredict.serving.fastpath.pipeline import (
        PARITY_ATOL,
        CompiledModel,
        check_parity,
        compile_pipeline,
        records_frame,
        tree_scorer,
    )
    from healthpredict.serving.fastpath.trees import TreeCompileError

# Public name -> the module of the package that defines it.
_HOME = {
    "FastPathError": "encoder",
    "Record": "encoder",
    "PARITY_ATOL": "pipeline",
    "CompiledModel": "pipeline",
    "check_parity": "pipeline",
    "compile_pipeline": "pipeline",
    "records_frame": "pipeline",
    "tree_scorer": "pipeline",
    "TreeCompileError": "trees",
}

__all__ = [
    "PARITY_ATOL",
    "CompiledModel",
    "FastPathError",
    "Record",
    "TreeCompileError",
    "check_parity",
    "compile_pipeline",
    "records_frame",
    "tree_scorer",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
