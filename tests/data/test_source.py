"""Opening the raw extract from every kind of location, and every way that can go wrong."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from healthpredict.data import source as source_module
from healthpredict.data.source import DataSourceError, open_raw


def test_csv_zip_and_file_url_read_the_same(
    raw_csv: Path, raw_zip: Path, raw_frame: pd.DataFrame
) -> None:
    from_csv = open_raw(str(raw_csv))
    from_zip = open_raw(str(raw_zip))
    from_url = open_raw(raw_zip.as_uri())
    pd.testing.assert_frame_equal(from_csv.frame, raw_frame.reset_index(drop=True))
    pd.testing.assert_frame_equal(from_csv.frame, from_zip.frame)
    pd.testing.assert_frame_equal(from_csv.frame, from_url.frame)
    assert from_csv.sha256 == hashlib.sha256(raw_csv.read_bytes()).hexdigest() == from_zip.sha256


def test_text_is_not_coerced(raw_csv: Path) -> None:
    frame = open_raw(str(raw_csv)).frame
    assert set(frame.dtypes.astype(str)) == {"object"}
    assert (frame["max_glu_serum"] == "None").any()


def test_expected_checksum_is_enforced(raw_csv: Path) -> None:
    good = hashlib.sha256(raw_csv.read_bytes()).hexdigest()
    assert open_raw(str(raw_csv), expected_sha256=good).sha256 == good
    with pytest.raises(DataSourceError, match="checksum mismatch"):
        open_raw(str(raw_csv), expected_sha256="0" * 64)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="no such file"):
        open_raw(str(tmp_path / "nope.zip"))


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataSourceError, match="empty"):
        open_raw(str(empty))


def test_blank_csv_has_no_header(tmp_path: Path) -> None:
    blank = tmp_path / "blank.csv"
    blank.write_text("\n\n")
    with pytest.raises(DataSourceError, match="empty"):
        open_raw(str(blank))


def test_truncated_zip(tmp_path: Path, raw_zip: Path) -> None:
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(raw_zip.read_bytes()[: raw_zip.stat().st_size // 2])
    with pytest.raises(DataSourceError, match="truncated or corrupt zip"):
        open_raw(str(truncated))


def test_zip_without_the_extract(tmp_path: Path) -> None:
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(DataSourceError, match=r"no diabetic_data\.csv"):
        open_raw(str(other))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_url() -> None:
    url = f"http://127.0.0.1:{_free_port()}/dataset_diabetes.zip"
    with pytest.raises(DataSourceError, match="download failed"):
        open_raw(url)


@pytest.fixture
def http_folder(tmp_path: Path, raw_zip: Path) -> Iterator[str]:
    """A real HTTP server on loopback serving ``tmp_path``."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_download(http_folder: str, raw_frame: pd.DataFrame) -> None:
    extract = open_raw(f"{http_folder}/dataset_diabetes.zip")
    assert extract.n_rows == len(raw_frame)


def test_http_not_found(http_folder: str) -> None:
    with pytest.raises(DataSourceError, match="404"):
        open_raw(f"{http_folder}/missing.zip")


def test_uci_download_is_verified(http_folder: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The synthetic extract is far smaller than the real one: the row check must refuse it.
    monkeypatch.setattr(source_module, "UCI_URL", f"{http_folder}/dataset_diabetes.zip")
    with pytest.raises(DataSourceError, match="expected 101,766 encounters"):
        open_raw("uci")
