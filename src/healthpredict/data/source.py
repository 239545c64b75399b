"""Open the raw extract wherever it lives: a local zip or csv, file://, s3://, http(s)://, or UCI.

Everything is read as text (``?`` and ``None`` stay strings): typing is the contract's job, so a
wrong value is reported by :mod:`healthpredict.data.validate` instead of being coerced here.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pandas as pd
import requests

from healthpredict.errors import HealthPredictError
from healthpredict.settings import UCI_SOURCE

UCI_URL = (
    "https://archive.ics.uci.edu/static/public/296/"
    "diabetes+130-us+hospitals+for+years+1999-2008.zip"
)
UCI_EXPECTED_ROWS = 101_766
CSV_MEMBER_SUFFIX = "diabetic_data.csv"
DOWNLOAD_TIMEOUT_SECONDS = 60
_ZIP_MAGIC = b"PK\x03\x04"


class DataSourceError(HealthPredictError):
    """The raw extract could not be opened or is not what it should be."""


@dataclass(frozen=True)
class RawExtract:
    """The raw extract as text, with where it came from and the checksum of its CSV."""

    frame: pd.DataFrame
    source: str
    sha256: str

    @property
    def n_rows(self) -> int:
        """Number of encounter rows (header excluded)."""
        return len(self.frame)


def open_raw(source: str, expected_sha256: str | None = None) -> RawExtract:
    """Open the raw extract and verify what arrived.

    Args:
        source: Local path (zip or csv), ``file://``/``s3://``/``http(s)://`` URL, or ``uci``.
        expected_sha256: When given, the sha256 the CSV content must have.

    Returns:
        The extract as an all-text frame.

    Raises:
        DataSourceError: The source is unreachable, empty, corrupt or not the expected file.
    """
    location = UCI_URL if source == UCI_SOURCE else source
    csv_bytes = _extract_csv(read_bytes(location), location)
    digest = hashlib.sha256(csv_bytes).hexdigest()
    if expected_sha256 and digest != expected_sha256.lower():
        raise DataSourceError(
            f"{location}: checksum mismatch: expected sha256 {expected_sha256}, got {digest}"
        )
    frame = _parse_csv(csv_bytes, location)
    if source == UCI_SOURCE and len(frame) != UCI_EXPECTED_ROWS:
        raise DataSourceError(
            f"{location}: expected {UCI_EXPECTED_ROWS:,} encounters from UCI, got {len(frame):,}"
        )
    return RawExtract(frame=frame, source=location, sha256=digest)


def read_bytes(location: str) -> bytes:
    """The whole content at ``location``: a local path, ``file://``, ``s3://`` or ``http(s)://``.

    Raises:
        DataSourceError: Not found, unreachable or unreadable (the message names it).
    """
    if location.startswith(("http://", "https://")):
        return _download(location)
    if "://" in location:
        try:
            with fsspec.open(location, "rb") as handle:
                return bytes(handle.read())
        except FileNotFoundError as error:
            raise DataSourceError(f"{location}: not found") from error
        except Exception as error:  # fsspec backends raise many types; name the source.
            raise DataSourceError(f"{location}: cannot be read: {error}") from error
    path = Path(location).expanduser()
    if not path.is_file():
        raise DataSourceError(f"{location}: no such file")
    return path.read_bytes()


def _download(url: str) -> bytes:
    try:
        response = requests.get(url, timeout=DOWNLOAD_TIMEOUT_SECONDS)
        response.raise_for_status()
    except requests.RequestException as error:
        raise DataSourceError(f"{url}: download failed: {error}") from error
    return response.content


def _extract_csv(content: bytes, location: str) -> bytes:
    if not content:
        raise DataSourceError(f"{location}: the file is empty")
    if not content.startswith(_ZIP_MAGIC):
        return content
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            members = [n for n in archive.namelist() if n.endswith(CSV_MEMBER_SUFFIX)]
            if not members:
                raise DataSourceError(f"{location}: the zip holds no {CSV_MEMBER_SUFFIX}")
            return archive.read(members[0])
    except (zipfile.BadZipFile, EOFError) as error:
        raise DataSourceError(f"{location}: truncated or corrupt zip: {error}") from error


def _parse_csv(csv_bytes: bytes, location: str) -> pd.DataFrame:
    try:
        # na_filter=False keeps '?' and 'None' as text; the contract decides what they mean.
        return pd.read_csv(io.BytesIO(csv_bytes), dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError as error:
        raise DataSourceError(f"{location}: the CSV is empty (no header)") from error
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataSourceError(f"{location}: not a readable CSV: {error}") from error
