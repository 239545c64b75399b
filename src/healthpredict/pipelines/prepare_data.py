"""Flow: open the raw extract, enforce the contract, clean, pseudonymise, cut and persist."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from healthpredict.data.prepare import CleaningReport, clean
from healthpredict.data.pseudonym import keyed_hash, load_or_create_salt, pseudonymise
from healthpredict.data.source import open_raw
from healthpredict.data.timeline import Manifest, cut_timeline, write_timeline
from healthpredict.data.validate import ValidationReport, validate_raw
from healthpredict.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparationSummary:
    """What preparing the data produced."""

    directory: Path
    manifest: Manifest
    validation: ValidationReport
    cleaning: CleaningReport


def redact_location(location: str) -> str:
    """Drop credentials and query strings (signed-URL tokens) from a source before recording it."""
    parts = urlsplit(location)
    if not parts.scheme or len(parts.scheme) == 1:  # a plain (or Windows drive) path
        return location
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def prepare_data(settings: Settings) -> PreparationSummary:
    """Run the data step end to end and persist the timeline with its manifest.

    Nothing is written when the extract is unreadable or more rows than tolerated break the
    contract; a previous timeline is replaced only once the new one is complete.

    Raises:
        DataSourceError: The source cannot be opened or is not the expected file.
        ContractError: Columns are missing, there are no rows, or too many rows are invalid.
        TimelineError: The timeline cannot be cut as configured.
    """
    raw = open_raw(settings.data.data_source, settings.data.data_sha256)
    logger.info(
        "opened %s: %s rows, sha256 %s", redact_location(raw.source), raw.n_rows, raw.sha256
    )
    checked = validate_raw(raw.frame)
    logger.info("contract: %s", checked.report.summary())
    checked.report.raise_if_exceeds(settings.data.max_invalid_fraction)
    cleaned, cleaning = clean(checked.valid)
    logger.info("cleaning: %s", cleaning.summary())
    salt = load_or_create_salt(settings)
    timeline = cut_timeline(
        pseudonymise(cleaned, salt),
        settings.data.initial_window_fraction,
        settings.data.n_batches,
        settings.data.test_fraction,
    )
    manifest = write_timeline(
        timeline,
        settings.data.prepared_dir,
        extras={
            "source": redact_location(raw.source),
            "source_sha256": raw.sha256,
            "config": {
                "initial_window_fraction": settings.data.initial_window_fraction,
                "n_batches": settings.data.n_batches,
                "test_fraction": settings.data.test_fraction,
            },
            "validation": checked.report.summary(),
            "cleaning": cleaning.summary(),
        },
        rejected=_pseudonymised_rejects(checked.rejected, salt),
    )
    return PreparationSummary(settings.data.prepared_dir, manifest, checked.report, cleaning)


def _pseudonymised_rejects(rejected: pd.DataFrame, salt: bytes) -> pd.DataFrame:
    """Rejected rows keep their raw text for diagnosis, but never the ids in clear."""
    result = rejected.copy()
    for column in ("encounter_id", "patient_nbr"):
        result[column] = keyed_hash(result[column], salt)
    return result
