"""The compiled tree scorer gives LightGBM's raw scores, caches its compile, survives damage."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from healthpredict.serving.fastpath import trees
from healthpredict.serving.fastpath.trees import (
    CompiledScorer,
    LightGBMScorer,
    TreeCompileError,
    TreeScorer,
    compile_trees,
    parity,
)

FEATURES = 24
# Measured: ~1e-15 (the same float64 leaf values summed in another order). LightGBM's own
# contract with the fast path is 1e-9 on probabilities; raw scores must be at least as close.
TOLERANCE = 1e-9

# A child process that loads a saved booster and compiles it into a shared cache folder.
# It needs only the Booster: blocking LightGBM's optional pandas/scikit-learn imports saves
# seconds of start-up per process.
_CHILD = """
import sys
from pathlib import Path
for optional in ("pandas", "sklearn", "pyarrow", "dask", "polars", "matplotlib", "graphviz"):
    sys.modules[optional] = None
import time
import lightgbm as lgb
from healthpredict.serving.fastpath import trees
if sys.argv[3:] == ["stall"]:  # hang with the object code built but not yet published
    compile_for_real = trees._lleaves_model
    def stalled(*args):
        compile_for_real(*args)
        print("stalled", flush=True)
        time.sleep(600)
    trees._lleaves_model = stalled
booster = lgb.Booster(model_file=sys.argv[1])
scorer = trees.compile_trees(booster, Path(sys.argv[2]))
print("from_cache" if scorer.from_cache else "compiled", flush=True)
"""


def _data(rows: int, seed: int) -> np.ndarray:
    """Float columns, 0/1 columns, integer columns; NaNs everywhere except column 3."""
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(rows, FEATURES))
    matrix[:, 12:] = (matrix[:, 12:] > 0.7).astype(float)
    matrix[:, 6:9] = np.round(matrix[:, 6:9] * 4)
    matrix[rng.random(matrix.shape) < 0.08] = np.nan
    matrix[:, 3] = np.nan_to_num(matrix[:, 3])
    return matrix


def _train(trees_count: int, leaves: int, seed: int = 0) -> lgb.Booster:
    matrix = _data(4000, seed)
    signal_ = np.nan_to_num(matrix[:, 0]) - np.nan_to_num(matrix[:, 1] * matrix[:, 3])
    rng = np.random.default_rng(seed)
    labels = signal_ + 0.8 * np.isnan(matrix[:, 2]) + rng.logistic(size=len(matrix)) > 1.0
    params = {"objective": "binary", "num_leaves": leaves, "verbose": -1, "seed": seed}
    return lgb.train(params, lgb.Dataset(matrix, labels.astype(int)), trees_count)


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    return _train(60, 15)


@pytest.fixture(scope="module")
def built(booster: lgb.Booster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding ``booster``'s compiled artefact (compiled once for the module)."""
    folder = tmp_path_factory.mktemp("built")
    assert not compile_trees(booster, folder).from_cache
    return folder


def _copy(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "cache"))


@pytest.fixture(scope="module")
def hard_rows(booster: lgb.Booster) -> np.ndarray:
    """Unseen rows plus the edge cases: values exactly on split thresholds, all-NaN rows,
    NaN in a column that had none in training (LightGBM reads it as 0), zeros."""
    matrix = _data(3000, seed=7)
    rng = np.random.default_rng(3)
    for row, (feature, threshold) in enumerate(_thresholds(booster)[:1000]):
        matrix[row, feature] = threshold
    matrix[1000:1100] = np.nan
    matrix[1100:1300, 3] = np.nan
    block = matrix[1300:1500]
    block[rng.random(block.shape) < 0.5] = 0.0
    # LightGBM reads |x| <= float32(1e-35) as 0; its split thresholds include ±that value.
    zero = float(np.float32(1e-35))
    tiny = [zero, -zero, 1e-36, -1e-36, np.nextafter(zero, 1), np.nextafter(-zero, -1), -0.0]
    block = matrix[1500:1700]
    mask = rng.random(block.shape) < 0.5
    block[mask] = rng.choice(tiny, size=int(mask.sum()))
    return matrix


def _thresholds(booster: lgb.Booster) -> list[tuple[int, float]]:
    found: list[tuple[int, float]] = []

    def walk(node: dict[str, Any]) -> None:
        if "split_feature" in node:
            found.append((node["split_feature"], node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return found


def test_raw_scores_equal_lightgbm(booster: lgb.Booster, hard_rows: np.ndarray, built: Path):
    scorer = compile_trees(booster, built)
    assert isinstance(scorer, TreeScorer) and scorer.backend == "lleaves"
    assert scorer.num_feature == FEATURES
    for threads in (1, 2, 0):
        assert parity(booster, scorer, hard_rows, threads) <= TOLERANCE
    assert scorer.raw_scores(hard_rows[:1], 1).shape == (1,)
    assert scorer.raw_scores(hard_rows[:0], 2).shape == (0,)
    # A Fortran-ordered matrix is copied to row order, not misread.
    assert parity(booster, scorer, np.asfortranarray(hard_rows)) <= TOLERANCE
    with pytest.raises(ValueError, match="matrix"):
        scorer.raw_scores(hard_rows[:, :-1], 1)


def test_second_compile_reuses_the_cache(booster: lgb.Booster, tmp_path: Path, monkeypatch):
    first = compile_trees(booster, tmp_path)
    assert not first.from_cache
    written = first.artefact.stat().st_mtime_ns
    time.sleep(0.01)  # a rewrite would show in the nanosecond mtime

    def no_compile(*_: object) -> None:
        raise AssertionError("recompiled although the artefact was cached")

    monkeypatch.setattr(trees, "_build", no_compile)
    second = compile_trees(booster, tmp_path)
    assert second.from_cache and second.artefact == first.artefact
    assert second.artefact.stat().st_mtime_ns == written
    assert parity(booster, second, _data(500, 1)) <= TOLERANCE


def test_the_key_follows_the_model(booster: lgb.Booster, built: Path, tmp_path: Path):
    cache = _copy(built, tmp_path)
    other = compile_trees(_train(20, 7, seed=1), cache)
    mine = compile_trees(booster, cache)
    assert mine.from_cache and not other.from_cache and mine.artefact != other.artefact
    assert mine.artefact.stem == trees.cache_key(booster.model_to_string())


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "flipped byte"])
def test_a_damaged_artefact_is_rebuilt(
    booster: lgb.Booster, built: Path, tmp_path: Path, damage: str
):
    cache = _copy(built, tmp_path)
    artefact = cache / f"{trees.cache_key(booster.model_to_string())}.lleaves"
    blob = artefact.read_bytes()
    damaged = {
        "truncated": blob[: len(blob) // 2],
        "garbage": os.urandom(len(blob)),
        "empty": b"",
        "flipped byte": blob[:-100] + bytes([blob[-100] ^ 0xFF]) + blob[-99:],
    }[damage]
    artefact.write_bytes(damaged)
    rebuilt = compile_trees(booster, cache)
    assert not rebuilt.from_cache
    assert artefact.read_bytes() != damaged
    assert parity(booster, rebuilt, _data(500, 2)) <= TOLERANCE


@pytest.mark.parametrize("forged", [False, True])
def test_another_models_artefact_is_rebuilt(
    booster: lgb.Booster, built: Path, tmp_path: Path, forged: bool
):
    """Another model's artefact under this key: its digest (which covers the key) fails; forged
    with a matching digest, the probe rows against LightGBM catch it."""
    cache = _copy(built, tmp_path)
    mine = cache / f"{trees.cache_key(booster.model_to_string())}.lleaves"
    other = compile_trees(_train(20, 7, seed=1), cache).artefact.read_bytes()
    if forged:
        code = other[len(trees._MAGIC) + trees._DIGEST_BYTES :]
        other = trees._MAGIC + trees._digest(mine, code) + code
    mine.write_bytes(other)
    rebuilt = compile_trees(booster, cache)
    assert not rebuilt.from_cache
    assert parity(booster, rebuilt, _data(500, 3)) <= TOLERANCE


def test_an_unwritable_cache_raises_the_typed_error(booster: lgb.Booster, tmp_path: Path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(TreeCompileError, match="tree cache"):
        compile_trees(booster, blocked / "cache")


def test_two_processes_compiling_at_once(booster: lgb.Booster, tmp_path: Path):
    model_file = tmp_path / "model.txt"
    booster.save_model(str(model_file))
    cache = tmp_path / "cache"
    children = [_spawn(model_file, cache) for _ in range(2)]
    outcomes = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0], outcomes
    # The per-key lock makes the second wait and load: one compile, not two.
    assert sorted(out.split()[-1] for out, _ in outcomes) == ["compiled", "from_cache"]
    scorer = compile_trees(booster, cache)
    assert scorer.from_cache
    assert parity(booster, scorer, _data(500, 4)) <= TOLERANCE


def test_a_killed_compile_leaves_no_broken_artefact(booster: lgb.Booster, tmp_path: Path):
    model_file = tmp_path / "model.txt"
    booster.save_model(str(model_file))
    cache = tmp_path / "cache"
    child = _spawn(model_file, cache, "stall")
    assert child.stdout is not None and child.stdout.readline().strip() == "stalled"
    assert list(cache.glob(".work-*/trees.o"))  # the object code exists, unpublished
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert not list(cache.glob("*.lleaves"))
    scorer = compile_trees(booster, cache)  # the dead process's lock went with it
    assert not scorer.from_cache
    assert not list(cache.glob(".work-*"))  # its scratch folder is cleared
    assert parity(booster, scorer, _data(500, 5)) <= TOLERANCE


def test_lightgbm_scorer_is_the_same_protocol(booster: lgb.Booster, hard_rows: np.ndarray):
    scorer = LightGBMScorer(booster)
    assert isinstance(scorer, TreeScorer) and scorer.backend == "lightgbm"
    assert scorer.num_feature == FEATURES
    assert parity(booster, scorer, hard_rows, 2) == 0.0
    assert not isinstance(scorer, CompiledScorer)


def test_unsupported_models_raise_the_typed_error(tmp_path: Path):
    matrix = _data(600, 0)
    labels = np.arange(len(matrix)) % 3
    multiclass = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(matrix, labels), 3
    )
    with pytest.raises(TreeCompileError, match="single-output"):
        compile_trees(multiclass, tmp_path)


def test_zero_as_missing_is_refused(tmp_path: Path):
    matrix = np.nan_to_num(_data(600, 0))
    params = {"objective": "binary", "zero_as_missing": True, "verbose": -1}
    labels = (matrix[:, 0] > 0).astype(int)
    booster = lgb.train(params, lgb.Dataset(matrix, labels), 3)
    with pytest.raises(TreeCompileError, match="zero_as_missing"):
        compile_trees(booster, tmp_path)


def test_no_compiler_raises_the_typed_error(booster: lgb.Booster, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lleaves", None)  # import lleaves now raises ImportError
    with pytest.raises(TreeCompileError, match="lleaves is not installed"):
        compile_trees(booster, tmp_path)


def _spawn(model_file: Path, cache: Path, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(model_file), str(cache), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
