"""Reading the extract from s3:// against a real S3 endpoint (moto server on loopback)."""

from __future__ import annotations

from pathlib import Path

import boto3
import pandas as pd
import pytest

from healthpredict.data.source import DataSourceError, open_raw

pytestmark = pytest.mark.integration


def test_s3_zip_is_read(s3_endpoint: str, raw_zip: Path, raw_frame: pd.DataFrame) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="hp-raw")
    client.upload_file(str(raw_zip), "hp-raw", "uci/dataset_diabetes.zip")
    extract = open_raw("s3://hp-raw/uci/dataset_diabetes.zip")
    pd.testing.assert_frame_equal(extract.frame, raw_frame.reset_index(drop=True))


def test_s3_missing_object(s3_endpoint: str) -> None:
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="hp-empty")
    with pytest.raises(DataSourceError, match=r"s3://hp-empty/nothing\.zip"):
        open_raw("s3://hp-empty/nothing.zip")
