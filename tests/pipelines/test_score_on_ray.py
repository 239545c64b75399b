"""`healthpredict score --ray-address`: the job on a two-node cluster started with `ray start`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthpredict.data.validate import validate_raw
from healthpredict.pipelines import score_on_ray as score_on_ray_module
from healthpredict.pipelines.score import score_file
from healthpredict.pipelines.score_on_ray import score_on_ray
from tests.support.champion import Champion, make_champion
from tests.support.ray_cluster import LocalRayCluster
from tests.synthetic import make_raw_frame

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).parent / "healthpredict")


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Champion:
    return make_champion(tmp_path_factory.mktemp("ray-champion"))


def test_partitioned_parquet_is_scored_on_both_nodes_as_in_one_process(
    champion: Champion,
    ray_cluster: LocalRayCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(score_on_ray_module, "ROWS_PER_CALL", 250)  # work for both actors
    rows = validate_raw(make_raw_frame(2000, seed=5).drop(columns=["readmitted"]), False).valid
    rows.loc[17, "age"] = "[200-210)"  # one row breaking the contract
    parts = tmp_path / "parts"
    parts.mkdir()
    for index, chunk in enumerate(np.array_split(rows, 8)):
        chunk.to_parquet(parts / f"part-{index}.parquet")
    rows.to_parquet(tmp_path / "all.parquet")
    alone = score_file(
        champion.settings, str(tmp_path / "all.parquet"), str(tmp_path / "one.parquet")
    )
    with ray_cluster.driver():
        report = score_on_ray(
            champion.settings, str(parts), str(tmp_path / "cluster"), ray_cluster.address
        )
    assert (report.scored, report.rejected) == (alone.scored, alone.rejected) == (1999, 1)
    assert {worker.split(":")[0] for worker in report.workers} == ray_cluster.node_ids
    assert len(report.workers) == 2  # one actor, so one model load, a node
    on_cluster = pd.read_parquet(tmp_path / "cluster").set_index("encounter_key").sort_index()
    in_process = pd.read_parquet(tmp_path / "one.parquet").set_index("encounter_key").sort_index()
    pd.testing.assert_frame_equal(on_cluster, in_process)
    rejects = pd.read_parquet(tmp_path / "cluster.rejects.parquet")
    assert rejects["rejection_reason"].str.startswith("age: not one of").tolist() == [True]
    assert not list(tmp_path.glob(".*partial"))


def test_an_unreachable_cluster_is_one_clear_line(champion: Champion, tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    validate_raw(make_raw_frame(20, seed=1).drop(columns=["readmitted"]), False).valid.to_parquet(
        source
    )
    env = {"HEALTHPREDICT_DATA_DIR": str(champion.settings.data.data_dir), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [CLI, "score", str(source), str(tmp_path / "out"), "--ray-address", "127.0.0.1:9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in result.stderr
    assert not (tmp_path / "out").exists()
