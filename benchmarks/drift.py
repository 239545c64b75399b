"""The data-drift monitor against Evidently's and NannyML's defaults: false alarms, power, time.

Everything is measured on the real extract, prepared into a temporary folder. The initial
window's patients are split in two halves (no patient in both): the *reference* is one random
encounter of every patient of the first half, and each *batch* is one random encounter of each
of R patients drawn uniformly (without replacement) from the second half, so batch and
reference are exchangeable: any alarm on such a batch is a false one.

1. False alarms. N exchangeable batches through the monitor (every contract field, family-wise
   level 5%: a batch alarms when any check of any field fires), through Evidently's
   ``DataDriftPreset()`` with its defaults (alarm: any column drifted; also its dataset verdict,
   a share of drifted columns >= 0.5) and through NannyML's univariate drift with its defaults
   (alarm: any alert in the chunk). Rates with 95% Clopper-Pearson intervals, and what fired.
2. Detection power. Shifts of six kinds (a category's share, a count's location, a count's
   spread, new codes, a new way of writing values, missing values), two fields each, four
   sizes, applied to fresh exchangeable batches, K repeats each: how often each method flags
   the shifted field. Every shifted batch is checked to keep the contract.
3. Time of ``DriftMonitor.run``: per batch of R rows (first call, with the calibration for the
   size, and the later ones), and on batches of 10,000 rows.

All three methods see the same columns (``healthpredict.monitoring.fields.comparable``:
categories as text with ``"(missing)"`` for empty values, counts as floats; NUMERICAL as
continuous, CATEGORICAL as categorical). Evidently's verdicts are the preset's own per-column
calls (``get_one_column_drift`` with default options, which its ``ValueDrift`` and
``DriftedColumnsCount`` metrics make) without the plots its ``Report`` renders (about 5 s a
batch, 0.9 s without); the full ``Report([DataDriftPreset()])`` runs on 10 control batches and
one shifted batch per kind, and the verdicts are compared column by column. Evidently runs in
two worker processes. NannyML runs once, on all chunks, in its own venv (``make
benchmark-tools``); without it that part is skipped. The pseudonym salt is fixed, so the
patient split (and every figure) is the same from run to run.

    make benchmark-drift    # or: .venv/bin/python benchmarks/drift.py [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import re
import tempfile
import textwrap
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import SecretStr
from scipy import stats

from healthpredict.data.pseudonym import PATIENT_KEY
from healthpredict.data.schema import COLUMNS
from healthpredict.data.timeline import INITIAL_WINDOW, load_window
from healthpredict.loop.streams import split_patients
from healthpredict.monitoring.drift import DriftMonitor, DriftResult
from healthpredict.monitoring.fields import (
    CATEGORICAL,
    NUMERICAL,
    WATCHED,
    FieldReference,
    comparable,
)
from healthpredict.monitoring.quality import record_violations
from healthpredict.pipelines.prepare_data import prepare_data
from healthpredict.settings import Settings

LEVEL = 0.05
PREDICTION_THRESHOLD = 0.1
SIZES = (0.01, 0.02, 0.05, 0.10)
LARGE_BATCH = 10_000
LARGE_CALLS = 4
EVIDENTLY_WORKERS = 2
EVIDENTLY_DRIFT_SHARE = 0.5  # DataDriftPreset's default dataset-level share
NEW_DIAGNOSES = 20  # distinct unseen codes a "new codes" shift writes
NEW_SPECIALTIES = ("Telemedicine", "Hospitalist", "Geriatrics", "PalliativeCare", "SleepMedicine")
SPECS = {spec.name: spec for spec in COLUMNS}
SALT = "drift-benchmark"  # a fixed pseudonym salt: the same patient split on every run
CHECKED_CONTROL = 10  # control batches also run through Evidently's full Report

ShiftFunction = Callable[[pd.DataFrame, float, np.random.Generator], pd.DataFrame]


# --- sampling -------------------------------------------------------------------------------
class PatientSampler:
    """Batches of one random encounter per patient, patients drawn uniformly."""

    def __init__(self, frame: pd.DataFrame, rng: np.random.Generator):
        """Index ``frame``'s encounters by patient."""
        codes, _ = pd.factorize(frame[PATIENT_KEY])
        self.frame = frame
        self.rng = rng
        self.order = np.argsort(codes, kind="stable")
        self.counts = np.bincount(codes)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])

    @property
    def patients(self) -> int:
        """Distinct patients."""
        return len(self.counts)

    def draw(self, rows: int | None = None) -> pd.DataFrame:
        """``rows`` distinct patients (all of them if None), one random encounter each."""
        chosen = self.rng.choice(self.patients, size=rows or self.patients, replace=False)
        offsets = (self.rng.random(len(chosen)) * self.counts[chosen]).astype(int)
        return self.frame.iloc[self.order[self.starts[chosen] + offsets]].reset_index(drop=True)


# --- shifts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shift:
    """One field shifted one way; ``apply(batch, size, rng)`` returns a shifted copy."""

    kind: str
    field: str
    description: str
    apply: ShiftFunction


def _pick(rng: np.random.Generator, eligible: np.ndarray, rows: int, size: float) -> np.ndarray:
    """Positions of ``size`` of ``rows`` rows, drawn among the ``eligible`` ones (all of them
    if there are fewer)."""
    positions = np.flatnonzero(eligible)
    wanted = min(round(size * rows), len(positions))
    return rng.choice(positions, size=wanted, replace=False)


def _with(batch: pd.DataFrame, field: str, positions: np.ndarray, values: Any) -> pd.DataFrame:
    shifted = batch.copy()
    column = shifted[field].to_numpy(copy=True)
    column[positions] = values
    shifted[field] = column
    return shifted


def to_category(value: Any, field: str) -> ShiftFunction:
    """A share of the rows not yet in category ``value`` moved to it."""

    def apply(batch: pd.DataFrame, size: float, rng: np.random.Generator) -> pd.DataFrame:
        positions = _pick(rng, (batch[field] != value).to_numpy(), len(batch), size)
        return _with(batch, field, positions, value)

    return apply


def add_one(field: str) -> ShiftFunction:
    """One added to a share of the rows (those below the contract's maximum)."""
    maximum = SPECS[field].maximum or 0

    def apply(batch: pd.DataFrame, size: float, rng: np.random.Generator) -> pd.DataFrame:
        positions = _pick(rng, (batch[field] < maximum).to_numpy(), len(batch), size)
        return _with(batch, field, positions, batch[field].to_numpy()[positions] + 1)

    return apply


def stretch(field: str) -> ShiftFunction:
    """Every row's deviation from the batch median times (1 + size), randomly rounded to an
    integer (unbiased), clipped to the contract's range."""
    low, high = SPECS[field].minimum or 0, SPECS[field].maximum or 0

    def apply(batch: pd.DataFrame, size: float, rng: np.random.Generator) -> pd.DataFrame:
        values = batch[field].to_numpy(dtype=float)
        median = float(np.median(values))
        target = median + (values - median) * (1 + size)
        rounded = np.floor(target) + (rng.random(len(values)) < target - np.floor(target))
        shifted = batch.copy()
        shifted[field] = np.clip(rounded, low, high).astype(batch[field].dtype)
        return shifted

    return apply


def to_new_values(field: str, values: tuple[str, ...]) -> ShiftFunction:
    """A share of the rows with a value given one of ``values`` (never in the reference)."""

    def apply(batch: pd.DataFrame, size: float, rng: np.random.Generator) -> pd.DataFrame:
        positions = _pick(rng, batch[field].notna().to_numpy(), len(batch), size)
        return _with(batch, field, positions, rng.choice(np.array(values), size=len(positions)))

    return apply


def rewritten(field: str, rewrite: Callable[[str], str]) -> ShiftFunction:
    """A share of the rows whose value ``rewrite`` changes, rewritten."""

    def apply(batch: pd.DataFrame, size: float, rng: np.random.Generator) -> pd.DataFrame:
        values = batch[field]
        new = values.map(lambda v: rewrite(v) if isinstance(v, str) else v)
        eligible = (values.notna() & (new != values)).to_numpy()
        positions = _pick(rng, eligible, len(batch), size)
        return _with(batch, field, positions, new.to_numpy()[positions])

    return apply


def to_missing(field: str) -> ShiftFunction:
    """A share of the rows with a value emptied."""

    def apply(batch: pd.DataFrame, size: float, rng: np.random.Generator) -> pd.DataFrame:
        positions = _pick(rng, batch[field].notna().to_numpy(), len(batch), size)
        return _with(batch, field, positions, None)

    return apply


def icd9_rewrite(code: str) -> str:
    """Another accepted way of writing an ICD-9 code: "38" -> "038", "428" -> "428.0",
    "V57" -> "V57.0", "250.01" -> "250.1", "250.8" -> "250.80" ("250.83" is left as is)."""
    if re.fullmatch(r"\d{1,2}", code):
        return code.zfill(3)
    if re.fullmatch(r"[VE]?\d+", code):
        return code + ".0"
    if match := re.fullmatch(r"(.+)\.0(\d)", code):
        return f"{match[1]}.{match[2]}"
    if re.fullmatch(r".+\.\d", code):
        return code + "0"
    return code


def specialty_rewrite(value: str) -> str:
    """Lower case, separators as spaces: "Surgery-General" -> "surgery general"."""
    return re.sub(r"[-/&]", " ", value).lower()


def unseen_diagnoses(reference: pd.Series, rng: np.random.Generator) -> tuple[str, ...]:
    """ICD-9-shaped codes ("999.99", a shape the reference has) that the reference lacks."""
    seen = set(reference.dropna())
    candidates = [f"{n}.{d:02d}" for n in range(100, 1000) for d in range(11, 100)]
    fresh = [code for code in candidates if code not in seen]
    return tuple(rng.choice(np.array(fresh), size=NEW_DIAGNOSES, replace=False).tolist())


def shifts(reference: pd.DataFrame, rng: np.random.Generator) -> list[Shift]:
    """The family of shifts: six kinds, two fields each."""
    specialties = tuple(v for v in NEW_SPECIALTIES if v not in set(reference.medical_specialty))
    diagnoses = unseen_diagnoses(reference["diag_1"], rng)
    return [
        Shift("proportion", "age", 'rows moved to "[80-90)"', to_category("[80-90)", "age")),
        Shift(
            "proportion",
            "admission_type_id",
            "rows moved to code 5",
            to_category(5, "admission_type_id"),
        ),
        Shift("location", "number_inpatient", "+1 on rows", add_one("number_inpatient")),
        Shift("location", "num_lab_procedures", "+1 on rows", add_one("num_lab_procedures")),
        Shift("scale", "num_medications", "spread x(1+s)", stretch("num_medications")),
        Shift("scale", "time_in_hospital", "spread x(1+s)", stretch("time_in_hospital")),
        Shift(
            "new_codes",
            "diag_1",
            f"rows given one of {len(diagnoses)} unseen codes (e.g. {diagnoses[0]})",
            to_new_values("diag_1", diagnoses),
        ),
        Shift(
            "new_codes",
            "medical_specialty",
            f"rows given one of {len(specialties)} new specialties",
            to_new_values("medical_specialty", specialties),
        ),
        Shift(
            "format",
            "diag_3",
            '"38"->"038", "428"->"428.0", "250.01"->"250.1"',
            rewritten("diag_3", icd9_rewrite),
        ),
        Shift(
            "format",
            "medical_specialty",
            '"Surgery-General"->"surgery general"',
            rewritten("medical_specialty", specialty_rewrite),
        ),
        Shift("missingness", "race", "rows emptied", to_missing("race")),
        Shift("missingness", "medical_specialty", "rows emptied", to_missing("medical_specialty")),
    ]


@dataclass(frozen=True)
class ShiftedBatch:
    """One repeat of one shift at one size."""

    shift: Shift
    size: float
    repeat: int
    batch: pd.DataFrame


def shifted_batches(
    family: list[Shift], sampler: PatientSampler, rows: int, repeats: int
) -> tuple[list[ShiftedBatch], list[str]]:
    """Every (shift, size, repeat) on a fresh batch; shifts breaking the contract are left out
    (with the reason)."""
    made, skipped = [], []
    for shift in family:
        for size in SIZES:
            for repeat in range(repeats):
                batch = shift.apply(sampler.draw(rows), size, sampler.rng)
                broken = record_violations(batch)
                if broken:
                    fields = Counter(name for names in broken.values() for name in names)
                    skipped.append(f"{shift.kind}/{shift.field} at {size:.0%}: {dict(fields)}")
                    continue
                made.append(ShiftedBatch(shift, size, repeat, batch))
    return made, skipped


# --- Evidently (in worker processes) --------------------------------------------------------
@dataclass(frozen=True)
class EvidentlyVerdict:
    """DataDriftPreset's verdicts on one batch."""

    drifted: dict[str, bool]  # column -> drift detected
    share: float  # share of drifted columns (the dataset verdict is share >= 0.5)
    seconds: float


_WORKER: dict[str, Any] = {}


def _evidently_init(reference: pd.DataFrame) -> None:
    warnings.simplefilter("ignore")  # Evidently warns about its own internals
    _WORKER["reference"] = reference
    _WORKER["dataset"] = None


def _definition(columns: list[str]) -> Any:
    from evidently import DataDefinition

    return DataDefinition(
        numerical_columns=[c for c in columns if c in NUMERICAL],
        categorical_columns=[c for c in columns if c in CATEGORICAL],
    )


def evidently_columns(current: pd.DataFrame) -> EvidentlyVerdict:
    """DataDriftPreset's per-column verdicts without its plots: for each column of ``current``
    (comparable), the call its ``ValueDrift`` and ``DriftedColumnsCount`` make
    (``get_one_column_drift``, default options: the test and threshold chosen per column)."""
    from evidently.legacy.calculations.data_drift import get_one_column_drift
    from evidently.legacy.core import ColumnType
    from evidently.legacy.metric_results import DatasetColumns, DatasetUtilityColumns
    from evidently.legacy.options.data_drift import DataDriftOptions

    started = time.perf_counter()
    drifted = {}
    for column in current.columns:
        numerical = column in NUMERICAL
        kind = ColumnType.Numerical if numerical else ColumnType.Categorical
        names = DatasetColumns(
            utility_columns=DatasetUtilityColumns(date=None, id=None, target=None, prediction=None),
            target_type=None,
            task=None,
            num_feature_names=[column] if numerical else [],
            cat_feature_names=[] if numerical else [column],
            text_feature_names=[],
            datetime_feature_names=[],
            target_names=None,
        )
        drift = get_one_column_drift(
            current_data=current,
            reference_data=_WORKER["reference"],
            column_name=column,
            options=DataDriftOptions(),
            dataset_columns=names,
            column_type=kind,
            agg_data=True,
        )
        drifted[column] = bool(drift.drift_detected)
    share = sum(drifted.values()) / len(drifted)
    return EvidentlyVerdict(drifted, share, time.perf_counter() - started)


def evidently_report(current: pd.DataFrame) -> EvidentlyVerdict:
    """``Report([DataDriftPreset()])`` with its defaults on ``current`` (comparable, every
    watched column), read from the snapshot."""
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = list(current.columns)
    if _WORKER["dataset"] is None:
        _WORKER["dataset"] = Dataset.from_pandas(
            _WORKER["reference"][columns], data_definition=_definition(columns)
        )
    started = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current, data_definition=_definition(columns)), _WORKER["dataset"]
    )
    drifted, share = evidently_verdicts(snapshot.dict()["metrics"])
    return EvidentlyVerdict(drifted, share, time.perf_counter() - started)


def evidently_verdicts(metrics: list[dict[str, Any]]) -> tuple[dict[str, bool], float]:
    """Per-column verdicts read by metric identity (each ``ValueDrift``'s column, method and
    threshold), checked against the preset's ``DriftedColumnsCount``."""
    drifted: dict[str, bool] = {}
    counted: dict[str, float] | None = None
    for metric in metrics:
        config = metric["config"]
        kind = str(config.get("type", ""))
        if kind.endswith(":ValueDrift"):
            value, threshold = float(metric["value"]), float(config["threshold"])
            p_value = "p_value" in str(config["method"])
            drifted[config["column"]] = value < threshold if p_value else value >= threshold
        elif kind.endswith(":DriftedColumnsCount"):
            counted = metric["value"]
    if counted is None or int(counted["count"]) != sum(drifted.values()):
        raise RuntimeError(f"Evidently's drifted-column count {counted} disagrees with {drifted}")
    return drifted, float(counted["share"])


@dataclass(frozen=True)
class EvidentlyRuns:
    """Evidently on every batch, and the full Report on a sample to check the per-column path."""

    control: list[EvidentlyVerdict]
    shifted: list[EvidentlyVerdict]  # the shifted column only
    checked_columns: list[EvidentlyVerdict]
    checked_report: list[EvidentlyVerdict]

    def agreement(self) -> tuple[int, list[str]]:
        """Checked batches where the Report and the per-column path agree on every column and
        the share; the differences."""
        same, differences = 0, []
        for index, (ours, report) in enumerate(
            zip(self.checked_columns, self.checked_report, strict=True)
        ):
            differ = [c for c in report.drifted if report.drifted[c] != ours.drifted.get(c)]
            if not differ and abs(ours.share - report.share) < 1e-9:
                same += 1
            else:
                differences.append(f"batch {index}: {differ or 'share'}")
        return same, differences


def run_evidently(
    reference: pd.DataFrame,
    control: list[pd.DataFrame],
    shifted: list[pd.DataFrame],
    checked: list[pd.DataFrame],
) -> EvidentlyRuns:
    """Comparable frames through Evidently in worker processes: ``control`` and ``shifted`` by
    the per-column path, ``checked`` by both it and the full Report."""
    with ProcessPoolExecutor(
        EVIDENTLY_WORKERS, initializer=_evidently_init, initargs=(reference,)
    ) as pool:
        return EvidentlyRuns(
            control=list(pool.map(evidently_columns, control)),
            shifted=list(pool.map(evidently_columns, shifted)),
            checked_columns=list(pool.map(evidently_columns, checked)),
            checked_report=list(pool.map(evidently_report, checked)),
        )


# --- NannyML --------------------------------------------------------------------------------
def _with_predictions(frame: pd.DataFrame, rng: np.random.Generator, truth: bool) -> pd.DataFrame:
    """Random probabilities (and outcomes drawn from them): the drift part does not read them,
    the bridge needs them for CBPE."""
    probabilities = rng.random(len(frame))
    extra = {"y_pred_proba": probabilities}
    if truth:
        extra["y_true"] = (rng.random(len(frame)) < probabilities).astype(int)
    return frame.assign(**extra)


def run_nannyml_alerts(
    reference: pd.DataFrame, chunks: list[pd.DataFrame], rng: np.random.Generator
) -> tuple[pd.DataFrame | None, str]:
    """NannyML's univariate drift on every chunk (comparable frames): a (chunk x column) frame
    of alerts (any method), or None and why not."""
    try:
        from nannyml_bridge import run_nannyml

        results = run_nannyml(
            _with_predictions(reference, rng, truth=True),
            [_with_predictions(chunk, rng, truth=False) for chunk in chunks],
            continuous=list(NUMERICAL),
            categorical=list(CATEGORICAL),
        )
    except (ImportError, OSError, RuntimeError, ValueError) as error:
        return None, f"NannyML skipped: {type(error).__name__}: {error}"
    univariate = results.univariate
    alerts = univariate.pivot_table(index="chunk", columns="column", values="alert", aggfunc="any")
    methods = ", ".join(sorted(univariate["method"].unique()))
    spread = univariate.groupby("column")["upper_threshold"].first()
    note = (
        f"NannyML {results.version}: method(s) {methods}; upper thresholds (from the reference "
        f"cut in chunks of {len(chunks[0]):,}) {spread.min():.3f}-{spread.max():.3f}; "
        f"its own time {sum(results.seconds.values()):.1f} s"
    )
    return alerts.reindex(range(len(chunks))).astype(bool), note


# --- measuring ------------------------------------------------------------------------------
def clopper_pearson(hits: int, total: int) -> tuple[float, float]:
    """95% exact interval of a binomial rate."""
    low = stats.beta.ppf(0.025, hits, total - hits + 1) if hits else 0.0
    high = stats.beta.ppf(0.975, hits + 1, total - hits) if hits < total else 1.0
    return float(low), float(high)


def rate_line(name: str, hits: int, total: int) -> str:
    """``name: rate (hits/total), 95% CI``."""
    low, high = clopper_pearson(hits, total)
    return f"  {name:<44} {hits / total:6.1%} ({hits}/{total}), 95% CI {low:.1%}-{high:.1%}"


def top(counter: Counter[str], limit: int = 12) -> str:
    """The most frequent entries, ``name xN``."""
    return ", ".join(f"{name} x{count}" for name, count in counter.most_common(limit)) or "-"


@dataclass
class Monitored:
    """The monitor's results on a list of batches, with each call's time."""

    results: list[DriftResult]
    seconds: list[float]


def monitor_batches(monitor: DriftMonitor, batches: Iterable[pd.DataFrame]) -> Monitored:
    """Run the monitor on every batch, timing each call."""
    done = Monitored([], [])
    for batch in batches:
        started = time.perf_counter()
        done.results.append(monitor.run(batch, np.full(len(batch), PREDICTION_THRESHOLD)))
        done.seconds.append(time.perf_counter() - started)
    return done


def report_false_alarms(
    control: Monitored,
    runs: EvidentlyRuns,
    nannyml: pd.DataFrame | None,
    nannyml_note: str,
) -> None:
    """Part 1: every method's family-wise false-alarm rate on the exchangeable batches."""
    total = len(control.results)
    calibration = control.results[0].calibration
    checks = round(np.log(1 - calibration.level) / np.log(1 - calibration.share))
    fired = Counter(
        f"{finding.field}/{finding.check.value}"
        for result in control.results
        for drift in result.drifted
        for finding in drift.findings
    )
    alarms = sum(bool(result.drifted) for result in control.results)
    expected = total * calibration.share
    suspicious = int(stats.binom.ppf(0.99, total, calibration.share)) + 1
    fields = len(control.results[0].features)
    print(f"\n== 1. False alarms on {total} exchangeable batches ({fields} fields, "
          f"{calibration.batch_rows:,} rows each)")  # fmt: skip
    print(rate_line(f"ours (any check of any field; level {LEVEL:.0%})", alarms, total))
    print(f"    {checks} checks share the level: {calibration.share:.5f} each (Sidak), i.e. "
          f"{expected:.2f} expected firings per check over {total} batches; a check firing "
          f">= {suspicious} times would be above its share (p < 0.01)")  # fmt: skip
    print(f"    fired: {top(fired)}")
    over = [name for name, count in fired.items() if count >= suspicious]
    print(f"    checks above their share: {', '.join(over) or 'none'}")
    for name, detail in examples(control, [name for name, _ in fired.most_common(6)]).items():
        print(f"      e.g. {name}: {detail}")
    report_zero_thresholds(control)

    evidently = runs.control

    any_column = sum(any(v.drifted.values()) for v in evidently)
    dataset = sum(v.share >= EVIDENTLY_DRIFT_SHARE for v in evidently)
    columns = Counter(c for v in evidently for c, drifted in v.drifted.items() if drifted)
    print(rate_line("Evidently DataDriftPreset (any column)", any_column, total))
    print(rate_line("Evidently DataDriftPreset (dataset: share >= 0.5)", dataset, total))
    shares = np.array([v.share for v in evidently])
    print(f"    drifted columns per batch: median {np.median(shares) * len(WATCHED):.0f}, max "
          f"{shares.max() * len(WATCHED):.0f}; columns: {top(columns)}")  # fmt: skip
    same, differences = runs.agreement()
    print(f"    (per-column path; the full Report gave the same verdicts on every column on "
          f"{same} of {len(runs.checked_report)} batches checked"
          f"{': ' + '; '.join(differences) if differences else ''})")  # fmt: skip
    if nannyml is None:
        print(f"  {nannyml_note}")
        return
    alerted = nannyml.iloc[:total]
    print(rate_line("NannyML univariate drift (any alert)", int(alerted.any(axis=1).sum()), total))
    per_column = alerted.sum().sort_values(ascending=False)
    print(
        f"    alerts per chunk: median {np.median(alerted.sum(axis=1)):.0f}; columns: "
        + ", ".join(f"{c} x{n}" for c, n in per_column[per_column > 0].head(12).items())
    )
    print(f"    {nannyml_note}")


def examples(control: Monitored, names: list[str]) -> dict[str, str]:
    """The first finding's detail for each ``field/check`` in ``names``."""
    found: dict[str, str] = {}
    for result in control.results:
        for drift in result.drifted:
            for finding in drift.findings:
                name = f"{finding.field}/{finding.check.value}"
                if name in names and name not in found:
                    found[name] = finding.detail
    return {name: found[name] for name in names if name in found}


def report_zero_thresholds(control: Monitored) -> None:
    """Fields whose calibrated distribution threshold is 0 (one value in the reference): any
    other value in a batch moves the statistic above it."""
    nulls = control.results[0].calibration.nulls
    zero = sorted(name for name, null in nulls.items() if null.statistic <= 0)
    if not zero:
        print("    no distribution threshold of 0")
        return
    only_zero = 0
    for result in control.results:
        findings = [f for drift in result.drifted for f in drift.findings]
        if findings and all(f.field in zero and f.check.value == "distribution" for f in findings):
            only_zero += 1
    alarms = sum(bool(result.drifted) for result in control.results)
    print(f"    distribution threshold 0 (one value in the reference): {', '.join(zero)}; "
          f"batches alarmed by those alone: {only_zero}; without them the rate would be "
          f"{(alarms - only_zero) / len(control.results):.1%}")  # fmt: skip


def power_rows(
    shifted: list[ShiftedBatch],
    ours: Monitored,
    evidently: list[EvidentlyVerdict],
    nannyml: pd.DataFrame | None,
    offset: int,
) -> pd.DataFrame:
    """One row per shifted batch: whether each method flagged the shifted field."""
    rows = []
    for index, item in enumerate(shifted):
        field = item.shift.field
        drift = next(f for f in ours.results[index].features if f.feature == field)
        others = sum(f.feature != field for f in ours.results[index].drifted)
        nml = np.nan if nannyml is None else float(bool(nannyml.at[offset + index, field]))
        rows.append({
            "kind": item.shift.kind, "field": field, "size": item.size,
            "ours": drift.drifted, "checks": "+".join(f.check.value for f in drift.findings),
            "evidently": evidently[index].drifted[field], "nannyml": nml,
            "others": others,
        })  # fmt: skip
    return pd.DataFrame(rows)


def control_rates(
    control: Monitored, runs: EvidentlyRuns, nannyml: pd.DataFrame | None, fields: list[str]
) -> pd.DataFrame:
    """For each of ``fields``: the share of control batches where each method flagged it."""
    ours = {f: np.mean([d.drifted for r in control.results for d in r.features if d.feature == f])
            for f in fields}  # fmt: skip
    evidently = {f: np.mean([v.drifted[f] for v in runs.control]) for f in fields}
    total = len(control.results)
    nml = {f: np.nan if nannyml is None else float(nannyml[f].iloc[:total].mean()) for f in fields}
    return pd.DataFrame({"ours": ours, "evidently": evidently, "nannyml": nml})


def report_power(
    table: pd.DataFrame, family: list[Shift], skipped: list[str], k: int, control: pd.DataFrame
) -> None:
    """Part 2: the share of repeats where each method flagged the shifted field."""
    print(f"\n== 2. Detection power: share of {k} batches where each method flagged the shifted "
          f"field")  # fmt: skip
    for shift in family:
        print(f"  {shift.kind:<12} {shift.field:<20} {shift.description}")
    print("  (s: share of the batch's rows changed, among those the change applies to; for "
          "'scale', the stretch factor)")  # fmt: skip
    if skipped:
        print(f"  left out (would break the contract): {'; '.join(skipped)}")
    methods = ["ours", "evidently", "nannyml"]
    table = table.astype({m: float for m in methods})
    by_kind = table.pivot_table(index="kind", columns="size", values=methods, aggfunc="mean")
    by_kind = by_kind.reindex(list(dict.fromkeys(s.kind for s in family)))
    by_kind.columns = [f"{pair[0]} {pair[1]:.0%}" for pair in by_kind.columns.tolist()]
    print("\n  by kind x size (averaged over the two fields):")
    print(textwrap.indent(by_kind.round(2).to_string(), "  "))
    print("\n  per field:")
    grouped = table.groupby(["kind", "field", "size"], sort=False)
    detail = grouped[methods].mean()
    detail["our checks"] = grouped["checks"].agg(
        lambda c: top(Counter(x for v in c for x in v.split("+") if x), 5)
    )
    print(textwrap.indent(detail.round(2).to_string(), "  "))
    print("\n  the same fields unshifted (share of the control batches flagging them: a method "
          "that flags a field there 'detects' any shift of it):")  # fmt: skip
    print(textwrap.indent(control.round(2).to_string(), "  "))
    collateral = int((table["others"] > 0).sum())
    print(f"\n  ours, fields other than the shifted one flagged: {collateral} of {len(table)} "
          f"batches ({collateral / len(table):.1%}; a false-alarm rate)")  # fmt: skip
    undetected = detail[(detail[methods].fillna(0) == 0).all(axis=1)].index.tolist()
    print(f"  undetected by every method: "
          f"{'; '.join(f'{k}/{f} at {s:.0%}' for k, f, s in undetected) or 'none'}")  # fmt: skip


def quantiles(seconds: list[float]) -> str:
    """Median and p95 of timings."""
    return f"median {np.median(seconds):.3f} s, p95 {np.quantile(seconds, 0.95):.3f} s"


def calibration_seconds(reference: pd.DataFrame, sizes: list[int]) -> dict[int, float]:
    """The calibration's own time per batch size, on a fresh reference summary."""
    fields = FieldReference(reference, LEVEL)
    found = {}
    for size in sizes:
        started = time.perf_counter()
        fields.calibration(size)
        found[size] = time.perf_counter() - started
    return found


def report_time(
    control: Monitored,
    large: Monitored,
    pool: int,
    runs: EvidentlyRuns,
    calibration: dict[int, float],
) -> None:
    """Part 3: the monitor's time per batch."""
    rows = control.results[0].calibration.batch_rows
    large_rows = large.results[0].calibration.batch_rows
    print(f"\n== 3. DriftMonitor.run time ({len(WATCHED)} fields)")
    print(
        "  calibration alone (fresh reference summary): "
        + ", ".join(f"{size:,} rows {seconds:.2f} s" for size, seconds in calibration.items())
    )
    later = len(control.seconds) - 1
    print(f"  {rows:,} rows: first call {control.seconds[0]:.2f} s (calibration for the size "
          f"included); later {later} calls {quantiles(control.seconds[1:])}")  # fmt: skip
    note = "" if large_rows == LARGE_BATCH else f" (the pool has {pool:,} patients)"
    print(f"  {large_rows:,} rows{note}: first call {large.seconds[0]:.2f} s; later "
          f"{len(large.seconds) - 1} calls {quantiles(large.seconds[1:])}")  # fmt: skip
    columns = [v.seconds for v in runs.control]
    report = [v.seconds for v in runs.checked_report]
    print(f"  for comparison, Evidently on a {rows:,}-row batch ({EVIDENTLY_WORKERS} workers at "
          f"once): its per-column drift calls {quantiles(columns)}; Report([DataDriftPreset()]) "
          f"{quantiles(report)}")  # fmt: skip


# --- the run --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    """What to run."""

    batches: int
    batch_rows: int
    repeats: int


def parse_options() -> Options:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200, help="exchangeable batches")
    parser.add_argument("--batch-rows", type=int, default=2_000, help="rows per batch")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per shift and size")
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 batches, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        return Options(batches=40, batch_rows=args.batch_rows, repeats=2)
    return Options(args.batches, args.batch_rows, args.repeats)


def halves(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prepare the extract; the initial window split into (reference half, pool half)."""
    prepared = prepare_data(settings)
    window = load_window(settings.data.prepared_dir, prepared.manifest, INITIAL_WINDOW)
    return split_patients(window, settings.training.seed)


def main() -> None:
    """Prepare the extract into a temporary folder and run the three parts."""
    options = parse_options()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings.from_flat(data_dir=Path(folder), id_salt=SecretStr(SALT))
        reference_half, pool_half = halves(settings)
    seeds = np.random.SeedSequence(settings.training.seed).spawn(4)
    reference = PatientSampler(reference_half, np.random.default_rng(seeds[0])).draw()
    pool = PatientSampler(pool_half, np.random.default_rng(seeds[1]))
    rows = options.batch_rows
    print(f"reference: {len(reference):,} patients, one encounter each; pool: {pool.patients:,} "
          f"patients ({len(pool_half):,} encounters); batches of {rows:,} distinct patients; "
          f"prepared in {time.perf_counter() - started:.0f} s")  # fmt: skip

    monitor = DriftMonitor(
        reference,
        baseline_predictions=np.full(1000, PREDICTION_THRESHOLD),
        weights=pd.Series(1.0 / len(WATCHED), index=[f.name for f in WATCHED]),
        level=LEVEL,
        prediction_threshold=PREDICTION_THRESHOLD,
    )
    import_started = time.perf_counter()
    importlib.import_module("evidently.legacy.calculations.stattests.registry")  # timed apart

    print(f"Evidently's import: {time.perf_counter() - import_started:.1f} s (once a process)")

    control_batches = [pool.draw(rows) for _ in range(options.batches)]
    control = monitor_batches(monitor, control_batches)
    family = shifts(reference, np.random.default_rng(seeds[2]))
    shifted, skipped = shifted_batches(family, pool, rows, options.repeats)
    ours = monitor_batches(monitor, (item.batch for item in shifted))
    large_rows = min(LARGE_BATCH, pool.patients)
    large = monitor_batches(monitor, (pool.draw(large_rows) for _ in range(LARGE_CALLS)))

    values = comparable(reference)
    control_values = [comparable(batch) for batch in control_batches]
    shifted_values = [comparable(item.batch) for item in shifted]
    largest = [v for i, v in enumerate(shifted_values) if shifted[i].size == max(SIZES)]
    checked = control_values[:CHECKED_CONTROL] + [
        largest[i] for i in range(0, len(largest), 2 * options.repeats)
    ]  # and one shifted batch per kind (two fields a kind)
    runs = run_evidently(
        values,
        control_values,
        [frame[[item.shift.field]] for frame, item in zip(shifted_values, shifted, strict=True)],
        checked,
    )
    nannyml, nannyml_note = run_nannyml_alerts(
        values, control_values + shifted_values, np.random.default_rng(seeds[3])
    )

    report_false_alarms(control, runs, nannyml, nannyml_note)
    table = power_rows(shifted, ours, runs.shifted, nannyml, offset=len(control_values))
    fields = list(dict.fromkeys(shift.field for shift in family))
    rates = control_rates(control, runs, nannyml, fields)
    report_power(table, family, skipped, options.repeats, rates)
    seconds = calibration_seconds(reference, [rows, large_rows])
    report_time(control, large, pool.patients, runs, seconds)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
