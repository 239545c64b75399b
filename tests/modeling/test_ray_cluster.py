"""The search on a real two-node Ray cluster started with ``ray start`` (see ray_cluster.py).

Each node offers one CPU and each trial takes one, so two trials at a time need both nodes:
the trials, the folds they read from the head's object store and their reports really cross
between raylets. Both nodes share this host's IP, so trials are told apart by Ray node id.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from healthpredict.data.timeline import INITIAL_WINDOW, load_manifest, load_window
from healthpredict.modeling.train import usable_cpus
from healthpredict.modeling.tune import SearchError, connect_ray, load_search_space
from healthpredict.pipelines.prepare_data import prepare_data
from healthpredict.pipelines.tune_and_register import search
from healthpredict.settings import Settings
from tests.conftest import make_settings
from tests.support.ray_cluster import LocalRayCluster, RayClusterError
from tests.synthetic import make_raw_frame, write_csv

pytestmark = pytest.mark.integration
# One preprocessing choice (one encoding per fold), and trials of some seconds: Tune starts one
# trial actor per node at once and, reusing actors, hands the next trial to whichever is free
# first, so the first trial must outlast the other actor's later start (imports of a fresh
# worker, a few seconds here) or every trial runs on one node. Many small trees do that.
SPACE = """\
lightgbm:
  learning_rate: {loguniform: [0.01, 0.05]}
  n_estimators: {qrandint: [6000, 8000, 1000]}
  num_leaves: {lograndint: [7, 15]}
preprocessing:
  min_category_count: {choice: [[20]]}
"""


def _settings(folder: Path, ray_address: str) -> Settings:
    source, space = folder / "diabetic_data.csv", folder / "space.yaml"
    write_csv(make_raw_frame(3000, seed=21), str(source))
    space.write_text(SPACE)
    settings = make_settings(
        folder,
        source,
        ray_address=ray_address,
        search_space_file=space,
        tune_trials=4,
        tune_folds=2,
        # One CPU per trial (the search gives each trial usable_cpus() // concurrency).
        tune_concurrency=max(2, usable_cpus()),
        initial_window_fraction=0.7,
        n_batches=3,
    )
    prepare_data(settings)
    return settings


def _trial_nodes(results: Path) -> dict[str, str]:
    """Ray node id of every trial, from the reports Tune stored."""
    from ray.tune import ExperimentAnalysis

    (experiment,) = results.iterdir()
    frames = ExperimentAnalysis(str(experiment)).trial_dataframes
    return {trial: str(frame["node_id"].iloc[0]) for trial, frame in frames.items()}


def test_search_runs_trials_on_both_nodes(ray_cluster: LocalRayCluster, tmp_path: Path) -> None:
    import ray

    settings = _settings(tmp_path, ray_cluster.address)
    train = load_window(
        settings.data.prepared_dir, load_manifest(settings.data.prepared_dir), INITIAL_WINDOW
    )
    with ray_cluster.driver():
        connect_ray(settings.search.ray_address)
        # Joined the cluster (the driver attaches to the head), not a Ray of its own.
        assert ray.get_runtime_context().get_node_id() == ray_cluster.nodes[0].node_id
        result = search(train, load_search_space(settings.search.search_space_file), settings)
    assert not ray.is_initialized()
    assert len(result.trials) == 4
    assert result.best.complete and len(result.best.fold_scores) == 2
    nodes = _trial_nodes(settings.data.data_dir / "ray_results")
    names = {node.node_id: node.name for node in ray_cluster.nodes}
    placement = sorted(names.get(node, node) for node in nodes.values())
    print(f"trials per node: {placement}")
    assert len(nodes) == 4
    assert set(nodes.values()) == ray_cluster.node_ids, (
        f"trials ran on {placement}: one node's trial actor came up only after the other had "
        "finished its first trial (a heavily loaded machine?)"
    )


def test_a_local_ray_starts_after_the_cluster_driver_left(ray_cluster: LocalRayCluster) -> None:
    import ray

    with ray_cluster.driver():
        connect_ray(ray_cluster.address)
    assert not ray.is_initialized()
    connect_ray(None)  # a local Ray, as tests and `healthpredict tune` start without an address
    try:
        where = ray.remote(lambda: ray.get_runtime_context().get_node_id())
        assert ray.get(where.remote()) not in ray_cluster.node_ids
        with pytest.raises(SearchError, match="already connected"):
            connect_ray(ray_cluster.address)  # never search on the wrong cluster silently
    finally:
        ray.shutdown()
    # `ray start` records its address in its own --temp-dir, so other drivers' `ray.init()` on
    # this machine neither find nor join this cluster.
    port = ray_cluster.address.rsplit(":", 1)[1]
    assert (ray_cluster.nodes[0].temp_dir / "ray_current_cluster").read_text().endswith(port)
    default = Path("/tmp/ray/ray_current_cluster")
    assert not default.is_file() or not default.read_text().strip().endswith(f":{port}")


def test_a_node_that_cannot_start_is_a_clear_error_and_leaves_nothing() -> None:
    import shutil
    import tempfile

    parent = Path(tempfile.mkdtemp(prefix="lrcf-", dir="/tmp"))  # short: Ray's socket paths
    try:
        with pytest.raises(RayClusterError, match=r"head node exited[\s\S]*nonnegative"):
            LocalRayCluster(num_cpus=-1, root=parent).start()
        assert list(parent.iterdir()) == []  # its temp folder is removed
        assert _live_processes_naming(str(parent)) == []
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _live_processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            zombie = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
            if not zombie and text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found
