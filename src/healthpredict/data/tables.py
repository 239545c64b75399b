"""Table files anywhere: CSV or Parquet read in batches, Parquet written all or nothing.

Locations are a local path, ``file://``, ``s3://`` (any fsspec URL) or ``http(s)://`` (read
only). Reading streams batches, so a file larger than memory can be scored; a CSV is read as
text in every column (the contract, not a type guess, decides what a cell means). A
:class:`ParquetOutput` is written to a staging file and only moved into place, or uploaded as one
object, when the whole job succeeded: a failed or killed job leaves no half-written output.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import fsspec
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from healthpredict.data.source import DataSourceError, read_bytes
from healthpredict.errors import HealthPredictError
from healthpredict.files import move_into_place

Format = Literal["csv", "parquet"]
_PARQUET_MAGIC = b"PAR1"
_CSV_BLOCK_BYTES = 8 << 20


class TableFileError(HealthPredictError):
    """A table file cannot be read or written (the message names the location and why)."""


@dataclass(frozen=True)
class TableSource:
    """A readable CSV or Parquet file and, for Parquet, its row count."""

    location: str
    format: Format
    rows: int | None


def open_table(location: str) -> TableSource:
    """Check that ``location`` is a readable CSV or Parquet file, without reading it all.

    Raises:
        TableFileError: It does not exist, cannot be read, or is neither CSV nor Parquet.
    """
    with _binary(location) as handle:
        head = handle.read(4)
        if not head:
            raise TableFileError(f"{location}: the file is empty")
        handle.seek(0)
        if head == _PARQUET_MAGIC:
            return TableSource(location, "parquet", _parquet(handle, location).metadata.num_rows)
        _csv_header(handle, location)
        return TableSource(location, "csv", None)


def read_batches(source: TableSource, rows: int) -> Iterator[pa.Table]:
    """The file's rows, ``rows`` at a time (the last batch may be shorter).

    Raises:
        TableFileError: The content breaks partway (truncated, corrupt, ragged rows).
    """
    with _binary(source.location) as handle:
        try:
            if source.format == "parquet":
                for batch in _parquet(handle, source.location).iter_batches(batch_size=rows):
                    yield pa.Table.from_batches([batch])
            else:
                yield from _csv_batches(handle, source.location, rows)
        except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as error:
            raise TableFileError(f"{source.location}: unreadable: {error}") from error


@contextlib.contextmanager
def _binary(location: str) -> Iterator[IO[bytes]]:
    """A seekable binary handle on ``location`` (an http(s) file is downloaded first)."""
    if location.startswith(("http://", "https://")):
        try:
            yield io.BytesIO(read_bytes(location))
        except DataSourceError as error:
            raise TableFileError(str(error)) from error
        return
    try:
        opened = fsspec.open(location, "rb").open()
    except FileNotFoundError as error:
        raise TableFileError(f"{location}: no such file") from error
    except IsADirectoryError as error:
        raise TableFileError(f"{location}: is a folder, not a file") from error
    except Exception as error:  # fsspec backends raise many types; name the location.
        raise TableFileError(f"{location}: cannot be read: {error}") from error
    with opened:
        yield opened


def _parquet(handle: IO[bytes], location: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(handle)
    except (pa.ArrowInvalid, OSError) as error:
        raise TableFileError(f"{location}: not a readable Parquet file: {error}") from error


def _csv_header(handle: IO[bytes], location: str) -> list[str]:
    """The column names on the first line (the handle is left at the start)."""
    try:
        line = handle.readline().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise TableFileError(f"{location}: not UTF-8 text, nor Parquet: {error}") from error
    handle.seek(0)
    names = next(csv.reader([line]), [])
    if not any(name.strip() for name in names):
        raise TableFileError(f"{location}: no header line (expected CSV or Parquet)")
    return names


def _csv_batches(handle: IO[bytes], location: str, rows: int) -> Iterator[pa.Table]:
    """CSV rows as text columns, regrouped into tables of ``rows``."""
    names = _csv_header(handle, location)
    reader = pa_csv.open_csv(
        handle,
        read_options=pa_csv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
        ),
    )
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in reader:
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending, schema=reader.schema)


@dataclass(frozen=True)
class _Staging:
    """The file being written, and its writer."""

    path: Path
    writer: pq.ParquetWriter


@dataclass
class ParquetOutput:
    """A Parquet file written to a staging file first, then published as a whole."""

    location: str
    _staging: _Staging | None = field(default=None, init=False)

    def check_writable(self) -> None:
        """Fail before any work when the destination cannot take the file.

        Raises:
            TableFileError: Not writable (a read-only scheme, a missing or read-only folder,
                an unreachable bucket, or a folder in the file's place).
        """
        if self.location.startswith(("http://", "https://")):
            raise TableFileError(f"{self.location}: cannot write over http(s); use a path or s3://")
        local = self._local
        if local is None:
            self._check_remote()
        elif local.is_dir():
            raise TableFileError(f"{self.location}: is a folder; give a file name")
        elif not local.parent.is_dir():
            raise TableFileError(f"{self.location}: the folder {local.parent} does not exist")
        elif not os.access(local.parent, os.W_OK | os.X_OK):
            raise TableFileError(f"{self.location}: the folder {local.parent} is not writable")

    def _check_remote(self) -> None:
        filesystem, path = fsspec.core.url_to_fs(self.location)
        bucket = path.split("/", 1)[0]  # object stores have buckets, not folders
        try:
            reachable = filesystem.exists(bucket)
        except Exception as error:  # credentials, endpoint, permissions: name the location
            raise TableFileError(f"{self.location}: cannot be written: {error}") from error
        if not reachable:
            raise TableFileError(f"{self.location}: the bucket {bucket} does not exist")

    @property
    def _local(self) -> Path | None:
        if self.location.startswith("file://"):
            return Path(self.location.removeprefix("file://"))
        return None if "://" in self.location else Path(self.location).expanduser()

    def write(self, table: pa.Table) -> None:
        """Append ``table`` (every call with the same schema) to the staging file."""
        staging = self._staging or self._start(table.schema)
        staging.writer.write_table(table.cast(staging.writer.schema))

    def _start(self, schema: pa.Schema) -> _Staging:
        name = f".{uuid.uuid4().hex}.partial.parquet"
        local = self._local
        # Beside the destination when local (the move is then a rename), else in the temp dir.
        path = (local.parent if local is not None else Path(tempfile.gettempdir())) / name
        self._staging = _Staging(path, pq.ParquetWriter(path, schema, compression="zstd"))
        return self._staging

    def publish(self, empty_schema: pa.Schema) -> None:
        """Move the staged file into place (an empty file of ``empty_schema`` if nothing was
        written).

        Raises:
            TableFileError: The upload failed (the destination is left as it was).
        """
        staging = self._staging or self._start(empty_schema)
        staging.writer.close()
        self._staging = None
        local = self._local
        if local is not None:
            move_into_place(staging.path, local)
            return
        filesystem, path = fsspec.core.url_to_fs(self.location)
        try:
            filesystem.put_file(str(staging.path), path)
        except Exception as error:
            raise TableFileError(f"{self.location}: upload failed: {error}") from error
        finally:
            staging.path.unlink(missing_ok=True)

    def discard(self) -> None:
        """Drop the staged file (the destination is left as it was)."""
        staging, self._staging = self._staging, None
        if staging is not None:
            with contextlib.suppress(Exception):
                staging.writer.close()
            staging.path.unlink(missing_ok=True)

    def remove(self) -> None:
        """Delete the published file (undoing :meth:`publish` when a later step failed)."""
        with contextlib.suppress(Exception):
            filesystem, path = fsspec.core.url_to_fs(self.location)
            filesystem.rm_file(path)


def publish_together(outputs: list[tuple[ParquetOutput, pa.Schema]]) -> None:
    """Publish each output in turn; if one fails, the ones already published are removed."""
    done: list[ParquetOutput] = []
    try:
        for output, schema in outputs:
            output.publish(schema)
            done.append(output)
    except Exception:
        for output in done:
            output.remove()
        raise
