"""Compiled tree scoring: a LightGBM booster as native code, with LightGBM's raw scores.

:func:`compile_trees` turns a booster into a :class:`CompiledScorer` with lleaves (the model
text lowered to LLVM IR, compiled for this CPU in float64; thresholds, leaf values and the
missing-value rules are LightGBM's, so raw scores match to float rounding of the sum). The
object code is cached on disk under a key that hashes the model text, the lleaves, llvmlite and
LLVM versions, this CPU and the compile options: a second load of the same model skips the
compile. An artefact is one file (header with a SHA-256 of key and object code, then the code),
written to a temporary file and renamed into place under a per-key lock, so a concurrent or
killed compile never leaves a half-written artefact; one that fails its digest or a probe
against LightGBM is rebuilt. :class:`LightGBMScorer` is the same protocol on the booster itself,
the fallback when compiling raises :class:`TreeCompileError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from healthpredict.errors import HealthPredictError
from healthpredict.files import move_into_place

# Raw-score sums in a different order than LightGBM's: ~1e-14 on 400 trees, far below this.
PARITY_ATOL = 1e-9
_MAGIC = b"HPTREES1"
_DIGEST_BYTES = 32
# Bump when the artefact layout or the compile options change: old artefacts are then ignored.
_FORMAT = "1"
_COMPILE_OPTIONS = {"raw_score": True, "use_fp64": True, "fblocksize": 34, "fcodemodel": "large"}
_PROBE_ROWS = 64
# LightGBM's kZeroThreshold (a float 1e-35 compared as double): inputs this close to 0 are 0.
_ZERO = float(np.float32(1e-35))


class TreeCompileError(HealthPredictError):
    """The booster could not be compiled (no compiler, unsupported model, compile failed)."""


@runtime_checkable
class TreeScorer(Protocol):
    """Raw scores (LightGBM's ``raw_score=True``) of a float64 feature matrix."""

    @property
    def backend(self) -> str:
        """Which implementation scores (``lleaves``, ``lightgbm``)."""
        ...

    @property
    def num_feature(self) -> int:
        """Number of input columns."""
        ...

    def raw_scores(self, matrix: np.ndarray, threads: int) -> np.ndarray:
        """One raw score per row; ``threads <= 0`` uses every core."""
        ...


@dataclass(frozen=True)
class LightGBMScorer:
    """:class:`TreeScorer` on the booster's own predict (the reference and the fallback)."""

    booster: Any
    backend: str = "lightgbm"

    @property
    def num_feature(self) -> int:
        """Number of input columns the booster expects."""
        return int(self.booster.num_feature())

    def raw_scores(self, matrix: np.ndarray, threads: int) -> np.ndarray:
        """LightGBM's raw score per row (``num_threads=0`` is LightGBM's default: all cores)."""
        return np.asarray(self.booster.predict(matrix, raw_score=True, num_threads=max(threads, 0)))


@dataclass(frozen=True)
class CompiledScorer:
    """:class:`TreeScorer` on an lleaves-compiled booster.

    Attributes:
        artefact: The cached object-code file this scorer was loaded from.
        from_cache: True when the artefact was already there (no compile in this call).
        seconds: Wall time of :func:`compile_trees` (compile or cached load).
    """

    model: Any
    num_feature: int
    artefact: Path
    from_cache: bool
    seconds: float
    backend: str = "lleaves"

    def raw_scores(self, matrix: np.ndarray, threads: int) -> np.ndarray:
        """LightGBM's raw score per row, on ``threads`` threads (the GIL is released)."""
        # lleaves takes a raw pointer to whatever it converts and does not keep the copy alive:
        # hand it a C-ordered float64 array it uses as it is.
        data = np.ascontiguousarray(matrix, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != self.num_feature:
            raise ValueError(f"expected a (rows, {self.num_feature}) matrix, got {data.shape}")
        if len(data) == 0:
            return np.zeros(0)
        jobs = threads if threads > 0 else (os.cpu_count() or 1)
        return np.asarray(self.model.predict(data, n_jobs=min(jobs, len(data))))


def compile_trees(booster: Any, cache_dir: Path) -> CompiledScorer:
    """Compile ``booster`` (or load its cached compile) into a :class:`CompiledScorer`.

    Args:
        booster: A fitted single-output ``lightgbm.Booster`` (binary or regression).
        cache_dir: Folder of compiled artefacts, created if missing; safe to share between
            processes.

    Raises:
        TreeCompileError: lleaves/llvmlite missing, an unsupported model, a failed compile, or
            a fresh compile that disagrees with LightGBM on the probe rows.
    """
    started = time.perf_counter()
    text = booster.model_to_string()
    source = _lleaves_source(booster, text)
    probe = _probe_matrix(booster)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        artefact = cache_dir / f"{cache_key(text)}.lleaves"
        with _locked(artefact):
            model = _load(artefact, source, booster, probe)
            from_cache = model is not None
            if model is None:
                _remove_stale_work(artefact)
                _build(artefact, source)
                model = _load(artefact, source, booster, probe)
    except OSError as error:
        raise TreeCompileError(f"cannot use the tree cache {cache_dir}: {error}") from error
    if model is None:
        raise TreeCompileError(f"the compiled trees differ from LightGBM ({artefact})")
    seconds = time.perf_counter() - started
    return CompiledScorer(model, booster.num_feature(), artefact, from_cache, seconds)


def parity(booster: Any, scorer: TreeScorer, matrix: np.ndarray, threads: int = 1) -> float:
    """Largest absolute difference between ``scorer``'s and LightGBM's raw scores on ``matrix``."""
    expected = np.asarray(booster.predict(matrix, raw_score=True, num_threads=max(threads, 0)))
    gap = np.abs(scorer.raw_scores(matrix, threads) - expected)
    return float(np.max(gap, initial=0.0))


def cache_key(model_text: str) -> str:
    """SHA-256 of the model text and everything the object code depends on."""
    digest = hashlib.sha256(model_text.encode())
    for part in _toolchain():
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()


def _toolchain() -> tuple[str, ...]:
    """Library versions, this CPU (the code is compiled for it) and the compile options."""
    try:
        import llvmlite.binding as llvm
    except ImportError as error:
        raise TreeCompileError(f"llvmlite is not installed ({error}): use LightGBM") from error
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM cannot always read them; lleaves then compiles without
        features = ""
    try:
        versions = [importlib.metadata.version(name) for name in ("lleaves", "llvmlite")]
    except importlib.metadata.PackageNotFoundError as error:
        raise TreeCompileError(f"{error.name} is not installed: use LightGBM") from error
    return (
        _FORMAT,
        *versions,
        ".".join(map(str, llvm.llvm_version_info)),
        llvm.get_host_cpu_name(),
        features,
        repr(sorted(_COMPILE_OPTIONS.items())),
    )


def _lleaves_source(booster: Any, text: str) -> str:
    """The model text lleaves compiles to LightGBM's decisions.

    LightGBM reads any ``|x| <= kZeroThreshold`` (float32 1e-35) as 0.0 before the trees see
    it; lleaves compares the raw value. Moving numerical thresholds inside that interval to its
    edges, on the side of the sign they have, sends every such tiny value where 0.0 goes and
    changes nothing else. Zero-as-missing splits would need the same on the missing test, which
    lleaves does as ``x == 0``: such models are refused.
    """
    if booster.num_model_per_iteration() != 1:
        raise TreeCompileError("only single-output boosters (binary, regression) are compiled")
    if "\nis_linear=1" in text:
        raise TreeCompileError("linear trees are not supported by lleaves")
    lines = text.split("\n")
    threshold_at = -1
    for index, line in enumerate(lines):
        if line.startswith("threshold="):
            threshold_at = index
        elif line.startswith("decision_type=") and threshold_at >= 0:
            types = [int(value) for value in line[len("decision_type=") :].split()]
            if any((kind >> 2) & 3 == 1 for kind in types):
                raise TreeCompileError("zero_as_missing models are not supported by lleaves")
            values = lines[threshold_at][len("threshold=") :].split()
            # Categorical splits (bit 0) hold an index into cat_threshold: left as they are.
            moved = [
                v if kind & 1 else _edge(float(v)) for v, kind in zip(values, types, strict=True)
            ]
            lines[threshold_at] = "threshold=" + " ".join(moved)
            threshold_at = -1
    return "\n".join(lines)


def _edge(threshold: float) -> str:
    """A threshold in [-Z, Z] moved to Z (if >= 0) or just below -Z, as exact text."""
    if abs(threshold) <= _ZERO:
        threshold = _ZERO if threshold >= 0 else float(np.nextafter(-_ZERO, -np.inf))
    return repr(threshold)


@contextlib.contextmanager
def _locked(artefact: Path) -> Iterator[None]:
    """One compile per key at a time across processes (released by the OS if killed)."""
    with open(artefact.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(artefact: Path, source: str) -> None:
    """Compile ``source`` and publish the artefact atomically (temp file, fsync, rename)."""
    with _scratch(artefact) as work:
        code_file = Path(work) / "trees.o"
        _lleaves_model(source, Path(work), code_file)
        code = code_file.read_bytes()
        blob = _MAGIC + _digest(artefact, code) + code
        partial = Path(work) / "artefact"  # in the work folder: removed if we are killed
        partial.write_bytes(blob)
        move_into_place(partial, artefact)


def _load(artefact: Path, source: str, booster: Any, probe: np.ndarray) -> Any | None:
    """The cached model if its artefact is intact and agrees with LightGBM, else None."""
    code = _read_verified(artefact)
    if code is None:
        return None
    with _scratch(artefact) as work:
        code_file = Path(work) / "trees.o"
        code_file.write_bytes(code)
        try:
            model = _lleaves_model(source, Path(work), code_file)
        except TreeCompileError:
            artefact.unlink(missing_ok=True)
            return None
    expected = booster.predict(probe, raw_score=True, num_threads=1)
    if not np.max(np.abs(model.predict(probe, n_jobs=1) - expected)) <= PARITY_ATOL:
        artefact.unlink(missing_ok=True)
        return None
    return model


def _read_verified(artefact: Path) -> bytes | None:
    """The object code of an artefact whose header and digest check out; else None (removed).

    LLVM does not validate object code it is handed, so a damaged file must never reach it.
    """
    try:
        blob = artefact.read_bytes()
    except FileNotFoundError:
        return None
    head = len(_MAGIC) + _DIGEST_BYTES
    code = blob[head:]
    if blob[: len(_MAGIC)] != _MAGIC or _digest(artefact, code) != blob[len(_MAGIC) : head]:
        artefact.unlink(missing_ok=True)
        return None
    return code


def _digest(artefact: Path, code: bytes) -> bytes:
    """SHA-256 of the key and the code: a file copied under another key fails it too."""
    return hashlib.sha256(artefact.stem.encode() + b"\0" + code).digest()


def _lleaves_model(source: str, work: Path, code_file: Path) -> Any:
    """An lleaves model of ``source``: compiled into ``code_file``, or loaded from it if present."""
    try:
        import lleaves
    except ImportError as error:
        raise TreeCompileError(f"lleaves is not installed ({error}): use LightGBM") from error
    model_file = work / "model.txt"
    model_file.write_text(source)
    try:
        model = lleaves.Model(model_file=str(model_file))
        model.compile(cache=str(code_file), **_COMPILE_OPTIONS)
    except Exception as error:  # lleaves raises assertions, RuntimeError, llvmlite errors
        raise TreeCompileError(f"lleaves could not compile the model: {error!r}") from error
    return model


def _probe_matrix(booster: Any) -> np.ndarray:
    """Fixed rows that walk many paths: normals, zeros, tiny values, NaNs, all-NaN rows."""
    rng = np.random.default_rng(20261202)
    probe = rng.normal(scale=2.0, size=(_PROBE_ROWS, booster.num_feature()))
    probe[rng.random(probe.shape) < 0.2] = np.nan
    probe[rng.random(probe.shape) < 0.2] = 0.0
    probe[rng.random(probe.shape) < 0.1] = -_ZERO
    probe[:2] = np.nan
    return probe


def _scratch(artefact: Path) -> tempfile.TemporaryDirectory[str]:
    """A private work folder beside the artefact (same file system: the rename is atomic)."""
    return tempfile.TemporaryDirectory(dir=artefact.parent, prefix=f".work-{artefact.stem[:16]}-")


def _remove_stale_work(artefact: Path) -> None:
    """Work folders of this key left by killed processes (the key's lock is held: none is live)."""
    for stale in artefact.parent.glob(f".work-{artefact.stem[:16]}-*"):
        shutil.rmtree(stale, ignore_errors=True)
