"""The images' figures: build times, sizes, start to ready, latency through the container.

1. Build: for the service and the Airflow image, the stand-in base (where the upstream one
   cannot be pulled), then the image cold (no layer cache) and again with the cache.
2. Size of the images.
3. The container started to ``/ready`` (the champion loaded from an MLflow server on the host).
4. Single-record ``/predict`` latency through the container's published loopback port against
   the same service run as a process on the host (same code, same model, same client), in one
   run: p50 and p99 of 300 sequential requests each, and their ratio.

    make benchmark-containers    # or: .venv/bin/python benchmarks/containers.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from healthpredict.delivery import engine as container_engine
from healthpredict.delivery import images, standins
from healthpredict.loop.service import free_port, service_process
from healthpredict.pipelines.prepare_data import prepare_data
from healthpredict.pipelines.train_and_register import train_and_register
from healthpredict.processes import wait_until_ok
from healthpredict.serving.examples import EXAMPLE_ENCOUNTER
from healthpredict.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' server helpers
from tests.support.real_services import MlflowServer

REQUESTS = 300
API_KEY = "benchmark-key-0123456789"


def engine(*argv: str) -> str:
    """One engine command's output."""
    done = subprocess.run(
        [*container_engine.engine(), *argv],
        capture_output=True,
        text=True,
        check=True,
        env=container_engine.engine_environment(),
    )
    return done.stdout.strip()


# Each project image: its Dockerfile, its base-image argument, the stand-in base it gets here.
IMAGES = (
    (images.SERVICE_DOCKERFILE, "PYTHON_IMAGE", standins.python, images.SERVICE_IMAGE),
    (images.AIRFLOW_DOCKERFILE, "AIRFLOW_IMAGE", standins.airflow, images.AIRFLOW_IMAGE),
)


def builds() -> None:
    """Part 1 and 2."""
    print("== 1. Builds")
    tags = []
    for dockerfile, argument, standin, name in IMAGES:
        started = time.perf_counter()
        base = standin()
        print(f"stand-in base {base}: ready in {time.perf_counter() - started:.0f} s (kept)")
        tag = f"{name}:bench"
        cold = _timed_build(dockerfile, tag, {argument: base}, no_cache=True)
        warm = _timed_build(dockerfile, tag, {argument: base}, no_cache=False)
        print(
            f"{dockerfile.name}: cold {cold:.0f} s, with the layer cache {warm:.1f} s "
            f"(ratio {cold / warm:.0f})"
        )
        tags.append(tag)
    print("\n== 2. Sizes")
    for tag in (*tags, standins.AIRFLOW, standins.PYTHON, standins.DEBIAN):
        size = int(engine("image", "inspect", tag, "--format", "{{.Size}}"))
        print(f"{tag}: {size / 1e6:,.0f} MB")


def _timed_build(dockerfile: Path, tag: str, arguments: dict[str, str], no_cache: bool) -> float:
    command = container_engine.engine()
    argv = [*command, "build", "-f", str(dockerfile), "-t", tag]
    argv += [f"--build-arg={name}={value}" for name, value in arguments.items()]
    argv += [*container_engine.build_options(command), *(["--no-cache"] if no_cache else [])]
    started = time.perf_counter()
    subprocess.run(
        [*argv, str(container_engine.ROOT)],
        check=True,
        capture_output=True,
        env=container_engine.engine_environment(),
    )
    return time.perf_counter() - started


def latencies(url: str, key: str) -> list[float]:
    """Seconds per sequential single-record /predict."""
    session = requests.Session()
    session.headers["X-API-Key"] = key
    for _ in range(20):  # warm-up
        session.post(f"{url}/predict?explanation=none", json=EXAMPLE_ENCOUNTER, timeout=30)
    times = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        answer = session.post(f"{url}/predict?explanation=none", json=EXAMPLE_ENCOUNTER, timeout=30)
        times.append(time.perf_counter() - started)
        answer.raise_for_status()
    return times


def _percentiles(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered) * 1000, ordered[int(0.99 * len(ordered))] * 1000


def serving(folder: Path) -> None:
    """Part 3 and 4."""
    server = MlflowServer.for_containers(folder)
    server.start()
    try:
        settings = Settings.from_flat(
            data_dir=folder / "data",
            mlflow_tracking_uri=server.url,
            mlflow_artifact_location="mlflow-artifacts:/bench",
        )
        prepare_data(settings)
        train_and_register(settings)
        port, name = free_port(), "healthpredict-bench"
        started = time.perf_counter()
        engine(
            "run",
            "-d",
            "--name",
            name,
            "--read-only",
            "--tmpfs",
            "/tmp",
            # The data folder (the salt, the prediction log) on a volume of its own, as the
            # Deployment's: an anonymous volume takes the image folder's owner.
            "-v",
            "/var/lib/healthpredict",
            "-e",
            f"HEALTHPREDICT_API_KEY={API_KEY}",
            "-e",
            f"HEALTHPREDICT_MLFLOW_TRACKING_URI=http://host.containers.internal:{server.port}",
            "-p",
            f"127.0.0.1:{port}:8000",
            f"{images.SERVICE_IMAGE}:bench",
        )
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url)
        print(
            f"\n== 3. Container started to /ready (champion loaded over HTTP): "
            f"{time.perf_counter() - started:.1f} s"
        )
        in_container = latencies(url, API_KEY)
        engine("rm", "-f", "--volumes", name)
        with service_process(
            settings.with_flat(api_key=None), "bench", folder / "service.log"
        ) as process:
            on_host = latencies(process.url, process.api_key)
    finally:
        server.stop()
    (c50, c99), (h50, h99) = _percentiles(in_container), _percentiles(on_host)
    print(f"\n== 4. Single-record /predict, {REQUESTS} sequential requests each")
    print(f"through the container's published port: p50 {c50:.2f} ms, p99 {c99:.2f} ms")
    print(f"the same service as a host process:      p50 {h50:.2f} ms, p99 {h99:.2f} ms")
    print(f"ratio container / host: p50 {c50 / h50:.2f}, p99 {c99 / h99:.2f}")


def _wait_ready(url: str, timeout: float = 180) -> None:
    why = wait_until_ok(f"{url}/ready", timeout, interval=0.1)  # a container: no process of ours
    if why is not None:
        raise SystemExit(f"{url}/ready {why}")


def main() -> None:
    """Build, then serve; everything in a temporary folder."""
    builds()
    with tempfile.TemporaryDirectory() as folder:
        serving(Path(folder))


if __name__ == "__main__":
    main()
