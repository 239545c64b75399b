"""`healthpredict score`: a whole file scored by the columnar path, rejects, and every bad input."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from healthpredict.data.pseudonym import keyed_hash, load_or_create_salt
from healthpredict.data.schema import FEATURE_COLUMNS
from healthpredict.data.validate import ContractError, validate_raw
from healthpredict.features import NUMERIC_FEATURES
from healthpredict.pipelines import score as score_module
from healthpredict.pipelines.score import ScoringError, load_model, score_file
from tests.support.champion import Champion
from tests.synthetic import make_raw_frame

CLI = str(Path(sys.executable).parent / "healthpredict")
ROWS = 600


@pytest.fixture(scope="module")
def compiled(champion: Champion) -> Champion:
    """The champion as the job runs by default: its trees compiled (lleaves)."""
    settings = champion.settings.with_flat(tree_compiler="lleaves")
    return Champion(settings, champion.version, champion.folder)


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    """Encounters in the extract's own form (its column names, '?' for missing, text)."""
    frame = make_raw_frame(ROWS, seed=21).drop(columns=["readmitted"])
    return frame.reset_index(drop=True)


@pytest.fixture(scope="module")
def expected(champion: Champion, raw: pd.DataFrame) -> pd.DataFrame:
    """What the registered pipeline itself says of every row, keyed as the job must key it."""
    valid = validate_raw(raw, with_label=False).valid
    pipeline = load_model(champion.settings, champion.version).pipeline
    salt = load_or_create_salt(champion.settings)
    return pd.DataFrame(
        {
            "encounter_key": keyed_hash(valid["encounter_id"], salt),
            "probability": pipeline.predict_proba(valid[list(FEATURE_COLUMNS)])[:, 1],
        }
    )


def _contract_named(raw: pd.DataFrame) -> pd.DataFrame:
    """The same rows as the API names them, typed, missing as null (how Parquet carries them)."""
    return validate_raw(raw, with_label=False).valid


def test_parquet_is_scored_exactly_as_the_pipeline_scores(
    compiled: Champion, raw: pd.DataFrame, expected: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "discharges.parquet"
    _contract_named(raw).to_parquet(source)
    report = score_file(compiled.settings, str(source), str(tmp_path / "scores.parquet"))
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    assert (report.rows, report.scored, report.rejected) == (ROWS, ROWS, 0)
    assert list(scores.columns) == [
        "encounter_key",
        "probability",
        "risk_band",
        "decision",
        "model_version",
    ]
    assert scores["encounter_key"].tolist() == expected["encounter_key"].tolist()
    np.testing.assert_allclose(scores["probability"], expected["probability"], rtol=0, atol=1e-9)
    settings = compiled.settings
    assert (
        scores["decision"] == (scores["probability"] >= settings.serving.decision_threshold)
    ).all()
    bands = np.searchsorted(settings.serving.risk_band_edges, scores["probability"], side="right")
    assert scores["risk_band"].tolist() == [settings.serving.risk_band_names[i] for i in bands]
    assert set(scores["model_version"]) == {compiled.version}
    assert "trees: lleaves" in report.fast_path  # 600 rows: the compiled trees scored them
    assert pd.read_parquet(tmp_path / "scores.rejects.parquet").empty
    assert "patient_nbr" not in scores and "encounter_id" not in scores


def test_extract_csv_with_bad_rows_and_duplicates_across_batches(
    champion: Champion,
    raw: pd.DataFrame,
    expected: pd.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(score_module, "BATCH_ROWS", 128)  # several batches: ids seen earlier
    broken = raw.copy()
    broken.loc[3, "age"] = "[200-210)"
    broken.loc[10, "diag_1"] = "not-a-code"
    broken.loc[10, "time_in_hospital"] = "-4"
    broken.loc[500, "encounter_id"] = broken.loc[7, "encounter_id"]  # a later batch repeats it
    source = tmp_path / "discharges.csv"
    broken.to_csv(source, index=False)
    done: list[tuple[int, int | None]] = []
    report = score_file(
        champion.settings,
        str(source),
        str(tmp_path / "scores.parquet"),
        on_batch=lambda rows, total: done.append((rows, total)),
    )
    assert (report.scored, report.rejected) == (ROWS - 3, 3)
    assert report.violations_by_column == {
        "age": 1,
        "time_in_hospital": 1,
        "diag_1": 1,
        "encounter_id (duplicate)": 1,
    }
    assert [rows for rows, _ in done] == [128, 256, 384, 512, 600] and done[0][1] is None
    rejects = pd.read_parquet(tmp_path / "scores.rejects.parquet").set_index("input_row")
    assert rejects.index.tolist() == [4, 11, 501]  # the row under the header is row 1
    assert rejects.loc[4, "rejection_reason"].startswith("age: not one of")
    assert "(not-a-code)" in rejects.loc[11, "rejection_reason"]
    assert "time_in_hospital: not an integer" in rejects.loc[11, "rejection_reason"]
    assert rejects.loc[501, "rejection_reason"] == "encounter_id: duplicate of an earlier row"
    assert rejects.loc[4, "age"] == "[200-210)"
    kept = ~pd.Series(range(ROWS)).isin([3, 10, 500])
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    want = expected[kept.to_numpy()]
    assert scores["encounter_key"].tolist() == want["encounter_key"].tolist()
    np.testing.assert_allclose(scores["probability"], want["probability"], rtol=0, atol=1e-9)


def test_reasons_on_request(champion: Champion, raw: pd.DataFrame, tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    _contract_named(raw).to_parquet(source)
    score_file(champion.settings, str(source), str(tmp_path / "out.parquet"), reasons=3)
    reasons = pd.read_parquet(tmp_path / "out.parquet")["reasons"]
    assert all(1 <= len(r) <= 3 for r in reasons)
    first = list(reasons.iloc[0])
    strengths = [abs(item["contribution"]) for item in first]
    assert strengths == sorted(strengths, reverse=True)
    # By request field or derived quantity, as the API names them (meds_up, prior_visits...).
    named = {item["feature"] for r in reasons for item in r}
    assert named <= set(FEATURE_COLUMNS) | set(NUMERIC_FEATURES) and "diag_1" in named


def test_an_explicit_version_and_a_missing_one(
    champion: Champion, raw: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "in.parquet"
    _contract_named(raw).head(20).to_parquet(source)
    out = tmp_path / "out.parquet"
    report = score_file(champion.settings, str(source), str(out), model_version=champion.version)
    assert report.model_version == champion.version
    with pytest.raises(ScoringError, match="has no version 999"):
        score_file(champion.settings, str(source), str(tmp_path / "other.parquet"), "999")
    assert not (tmp_path / "other.parquet").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "the file is empty"),
        (b"PAR1 this is not parquet", "not a readable Parquet file"),
        (b"\xff\xfe\x00garbage", "not UTF-8 text"),
        (b"\n\n", "no header line"),
    ],
)
def test_unreadable_input_is_named_and_nothing_is_written(
    champion: Champion, tmp_path: Path, content: bytes | None, message: str
) -> None:
    source = tmp_path / "in.data"
    if content is not None:
        source.write_bytes(content)
    with pytest.raises(Exception, match=message) as raised:
        score_file(champion.settings, str(source), str(tmp_path / "out.parquet"))
    assert type(raised.value).__name__ == "TableFileError"
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if content is None else ["in.data"])


def test_missing_contract_column_is_refused(
    champion: Champion, raw: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    raw.drop(columns=["A1Cresult"]).to_csv(source, index=False)
    with pytest.raises(ContractError, match=r"missing column.*a1c_result"):
        score_file(champion.settings, str(source), str(tmp_path / "out.parquet"))
    assert [p.name for p in tmp_path.iterdir()] == ["in.csv"]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("missing-folder/out.parquet", "does not exist"),
        ("read-only/out.parquet", "not writable"),
        ("https://example.invalid/out.parquet", "cannot write over http"),
        (".", "is a folder"),
    ],
)
def test_unwritable_output_fails_before_scoring(
    champion: Champion, raw: pd.DataFrame, tmp_path: Path, output: str, message: str
) -> None:
    if os.geteuid() == 0 and output.startswith("read-only"):
        pytest.skip("root writes into read-only folders")
    source = tmp_path / "in.parquet"
    _contract_named(raw).head(5).to_parquet(source)
    (tmp_path / "read-only").mkdir(mode=0o500)
    location = output if "://" in output else str(tmp_path / output)
    with pytest.raises(Exception, match=message):
        score_file(champion.settings, str(source), location)


def test_a_failure_partway_leaves_the_old_output_and_no_staging_file(
    champion: Champion,
    raw: pd.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = tmp_path / "in.parquet"
    _contract_named(raw).to_parquet(source)
    out = tmp_path / "out.parquet"
    out.write_bytes(b"yesterday's scores")
    monkeypatch.setattr(score_module, "BATCH_ROWS", 100)
    calls = {"n": 0}
    original = score_module.BatchScorer.score

    def failing(self: score_module.BatchScorer, table: pa.Table, first_row: int = 0):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk went away")
        return original(self, table, first_row)

    monkeypatch.setattr(score_module.BatchScorer, "score", failing)
    with pytest.raises(OSError, match="disk went away"):
        score_file(champion.settings, str(source), str(out))
    assert out.read_bytes() == b"yesterday's scores"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "out.parquet"]


@pytest.mark.integration
def test_s3_in_and_out(
    champion: Champion, raw: pd.DataFrame, expected: pd.DataFrame, s3_endpoint: str, tmp_path: Path
) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="hp-scoring")
    local = tmp_path / "in.parquet"
    _contract_named(raw).to_parquet(local)
    client.upload_file(str(local), "hp-scoring", "nightly/in.parquet")
    report = score_file(
        champion.settings,
        "s3://hp-scoring/nightly/in.parquet",
        "s3://hp-scoring/out/scores.parquet",
    )
    assert report.scored == ROWS
    client.download_file("hp-scoring", "out/scores.parquet", str(tmp_path / "scores.parquet"))
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    np.testing.assert_allclose(scores["probability"], expected["probability"], rtol=0, atol=1e-9)
    listed = client.list_objects_v2(Bucket="hp-scoring", Prefix="out/")["Contents"]
    assert sorted(o["Key"] for o in listed) == ["out/scores.parquet", "out/scores.rejects.parquet"]
    with pytest.raises(Exception, match="does not exist"):
        score_file(champion.settings, str(local), "s3://no-such-bucket/x/scores.parquet")


@pytest.mark.integration
def test_https_input(
    champion: Champion, raw: pd.DataFrame, expected: pd.DataFrame, tmp_path: Path
) -> None:
    (tmp_path / "in.csv").write_text(raw.to_csv(index=False))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/in.csv"
        report = score_file(champion.settings, url, str(tmp_path / "out.parquet"))
        with pytest.raises(Exception, match="404"):
            score_file(champion.settings, url + ".gone", str(tmp_path / "gone.parquet"))
    finally:
        server.shutdown()
    assert report.scored == ROWS
    scores = pd.read_parquet(tmp_path / "out.parquet")
    np.testing.assert_allclose(scores["probability"], expected["probability"], rtol=0, atol=1e-9)


@pytest.mark.integration
def test_cli_prints_the_counts_and_exits_1_on_a_missing_model(
    champion: Champion, raw: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    raw.head(50).to_csv(source, index=False)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHPREDICT_")}
    env = {**clean, "HEALTHPREDICT_DATA_DIR": str(champion.settings.data.data_dir)}
    ok = subprocess.run(
        [CLI, "score", str(source), str(tmp_path / "out.parquet")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "50 rows read" in ok.stdout and "50 scored by version" in ok.stdout
    missing = subprocess.run(
        [CLI, "score", str(source), str(tmp_path / "none.parquet"), "--model-version", "42"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 1
    assert "error:" in missing.stderr and "has no version 42" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert not (tmp_path / "none.parquet").exists()
