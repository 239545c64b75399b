"""Load benchmark of the prediction service: prints figures, asserts nothing.

Starts ``healthpredict serve`` (uvicorn) on 127.0.0.1 in a subprocess against the champion of
an existing registry, drives it over loopback with a minimal keep-alive HTTP/1.1 client (so
the client costs as little of the shared CPU as possible), and prints throughput and
p50/p95/p99 for ``/predict`` at several concurrencies, ``/health`` on the same server as the
ceiling, ``/predict/batch``, and in-process batch scoring rows per second. Then the issue's
figures from the same run: ``/health`` and ``/predict`` requests/s at 16 clients, their ratio,
``/predict``'s p50, p99 and p99/p50, and the server's CPU time per request (``--rounds``
alternating rounds and their median). With ``--profile FILE`` it also samples the server with
py-spy under ``/predict`` load and prints where a request's time goes (docs/serving.md).
Every phase is bounded in requests and in seconds; the server is stopped at the end, also on
error.

    .venv/bin/python benchmarks/load_service.py --data-dir data   # after `healthpredict demo`
    .venv/bin/python benchmarks/load_service.py --data-dir data --only-summary --profile p.raw
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from healthpredict.serving.examples import EXAMPLE_ENCOUNTER, contract_records


@dataclass(frozen=True)
class Figures:
    """One measured phase."""

    name: str
    requests: int
    seconds: float
    latencies_ms: np.ndarray
    failures: int

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds

    def line(self) -> str:
        """The phase as one printed row."""
        p50, p95, p99 = np.percentile(self.latencies_ms, [50, 95, 99])
        rate = self.rate
        return (
            f"{self.name:<28} {self.requests:>7,} req {rate:>9,.0f} req/s  p50 {p50:6.2f} ms  "
            f"p95 {p95:6.2f} ms  p99 {p99:6.2f} ms  p99/p50 {p99 / p50:4.1f}  "
            f"failed {self.failures}"
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(data_dir: Path, port: int, api_key: str, log_dir: Path) -> subprocess.Popen[bytes]:
    """Start the service in a subprocess on loopback, with a private prediction log."""
    env = {
        **os.environ,
        "HEALTHPREDICT_DATA_DIR": str(data_dir.resolve()),
        "HEALTHPREDICT_API_KEY": api_key,
        "HEALTHPREDICT_MODEL_POLL_SECONDS": "0",
        "HEALTHPREDICT_MONITORING_DB_URL": f"sqlite:///{log_dir / 'monitoring.db'}",
        "HEALTHPREDICT_ID_SALT": secrets.token_hex(16),
    }
    # The installed console script: exactly what an operator runs.
    command = [
        str(Path(sys.executable).parent / "healthpredict"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=open(log_dir / "server.log", "wb")
    )


def wait_ready(port: int, server: subprocess.Popen[bytes], timeout: float) -> dict[str, object]:
    """Poll /ready until the model is loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as answer:
                return dict(json.load(answer))
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"service not ready after {timeout:.0f}s")


def _request(method: str, path: str, body: bytes, api_key: str) -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {api_key}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    """Send one request on a keep-alive connection; return the status after reading the body."""
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _drive(
    port: int, raw: bytes, concurrency: int, total: int, seconds: float
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    failures = 0
    remaining = [total]
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while remaining[0] > 0 and time.perf_counter() < deadline:
            remaining[0] -= 1
            started = time.perf_counter()
            status = await _exchange(reader, writer, raw)
            latencies.append((time.perf_counter() - started) * 1000)
            failures += status != 200
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, failures, time.perf_counter() - started


def measure(
    name: str, port: int, raw: bytes, concurrency: int, total: int, seconds: float
) -> Figures:
    """Warm up, then run ``total`` requests (or ``seconds``, whichever ends first)."""
    asyncio.run(_drive(port, raw, concurrency, min(200, total), seconds))
    latencies, failures, elapsed = asyncio.run(_drive(port, raw, concurrency, total, seconds))
    return Figures(name, len(latencies), elapsed, np.asarray(latencies), failures)


def batch_scoring(data_dir: Path, rows: int) -> list[str]:
    """In-process rows per second: fast path, fast path with reasons, and the pipeline."""
    from healthpredict.serving.fastpath import records_frame
    from healthpredict.serving.model_store import ModelStore
    from healthpredict.settings import Settings

    store = ModelStore(Settings.from_flat(data_dir=data_dir))
    started = time.perf_counter()
    outcome = store.refresh()
    print(
        f"  model load, compile and parity check: {time.perf_counter() - started:.1f} s ({outcome})"
    )
    model = store.current
    assert model is not None and model.compiled is not None, "no champion with a fast path"
    compiled = model.compiled
    records = contract_records(rows, seed=7)
    lines = []
    for label, action in (
        ("fast path, probabilities", lambda: compiled.score(compiled.encode(records))),
        ("fast path + path reasons", lambda: model.score(records, "path")),
        ("pipeline.predict_proba", lambda: model.pipeline.predict_proba(records_frame(records))),
    ):
        started = time.perf_counter()
        action()
        lines.append(
            f"{label:<28} {rows / (time.perf_counter() - started):>12,.0f} rows/s ({rows:,} rows)"
        )
    return lines


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure_cpu(
    pid: int, port: int, raw: bytes, options: argparse.Namespace
) -> tuple[Figures, float]:
    """A phase at ``--pair-clients`` clients, and the server's CPU microseconds per request."""
    before = _cpu_seconds(pid)
    figures = measure("", port, raw, options.pair_clients, options.requests, options.seconds)
    warm_up = min(200, options.requests)  # measure() warms up first, on the same clock
    return figures, (_cpu_seconds(pid) - before) / (figures.requests + warm_up) * 1e6


def pair_summary(pid: int, port: int, api_key: str, options: argparse.Namespace) -> list[str]:
    """The issue's figures: /predict against /health on the same server at 16 clients.

    Measured ``--rounds`` times, alternating, so a neighbour's burst of CPU hits both; each
    round is printed and the medians are the result. The server's CPU time per request
    (from ``/proc``) does not depend on what else runs on the machine.
    """
    clients = options.pair_clients
    one = _request("POST", "/predict", json.dumps(EXAMPLE_ENCOUNTER).encode(), api_key)
    health = _request("GET", "/health", b"", api_key)
    rows = []
    for _ in range(options.rounds):
        predict, predict_cpu = _measure_cpu(pid, port, one, options)
        ceiling, health_cpu = _measure_cpu(pid, port, health, options)
        p50, p99 = np.percentile(predict.latencies_ms, [50, 99])
        ratio = predict.rate / ceiling.rate
        rows.append(
            (ceiling.rate, predict.rate, ratio, p50, p99, p99 / p50, health_cpu, predict_cpu)
        )
    lines = [
        f"{'x' + str(clients) + ' round':<10} {'/health':>8} {'/predict':>8} {'ratio':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'p99/p50':>7}  server CPU us/req: /health /predict"
    ]
    for i, row in enumerate([*rows, tuple(np.median(np.asarray(rows), axis=0))]):
        label = "median" if i == len(rows) else str(i + 1)
        lines.append(
            f"{label:<10} {row[0]:>8,.0f} {row[1]:>8,.0f} {row[2]:>6.2f} {row[3]:>7.2f} "
            f"{row[4]:>7.2f} {row[5]:>7.1f}  {row[6]:>25,.0f} {row[7]:>8,.0f}"
        )
    median = np.median(np.asarray(rows), axis=0)
    lines.append(
        f"targets: ratio >= 0.5 ({'met' if median[2] >= 0.5 else 'NOT met'}), "
        f"p99/p50 <= 5 ({'met' if median[5] <= 5 else 'NOT met'})"
    )
    return lines


# Where a sampled stack's time goes: the first rule with a frame named in it wins.
_WAITING = "waiting (idle writer thread)"
_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (_WAITING, ("Event.wait", "Condition.wait", "Queue.get")),
    ("prediction-log writer thread (inserts)", ("PredictionLogWriter._run",)),
    ("model: LoadedModel.score", ("LoadedModel.score",)),
    ("rest of predict_records", ("predict_records",)),
    ("request body parsing and validation", ("parse_body", "request_body_to_args", "Request.json")),
    ("FastAPI dependency solving", ("solve_dependencies",)),
    ("response: validation and JSON", ("serialize_response", "single_response", "_json")),
    ("metrics (prometheus)", ("ServiceMetrics",)),
    ("log submit (request side)", ("ServiceState.record",)),
    ("socket writes (uvicorn send)", ("RequestResponseCycle.send",)),
    ("HTTP, routing, middleware, rest", ()),
)


def _names(frame: str, markers: tuple[str, ...]) -> bool:
    """Whether ``frame`` ("Class.method", "function") is one of ``markers`` or in one."""
    return any(frame == m or frame.startswith(m + ".") or frame.endswith("." + m) for m in markers)


def profile_table(raw: Path, requests: float) -> list[str]:
    """Thread time per request by category, from py-spy's raw (collapsed) stacks."""
    samples = {name: 0 for name, _ in _CATEGORIES}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [frame.split(" (")[0] for frame in stack.split(";")]
        for name, markers in _CATEGORIES:
            if not markers or any(_names(frame, markers) for frame in frames):
                samples[name] += int(count)
                break
    busy = sum(n for name, n in samples.items() if name != _WAITING) or 1
    lines = [f"{'where':<42} {'share':>6} {'us/request':>11}"]
    for name, n in samples.items():
        if name != _WAITING:
            lines.append(f"{name:<42} {n / busy:>6.1%} {n / PROFILE_RATE / requests * 1e6:>11.0f}")
    total = busy / PROFILE_RATE / requests * 1e6
    lines.append(f"{'total (all threads, busy samples)':<42} {1:>6.0%} {total:>11.0f}")
    return lines


PROFILE_RATE = 250  # samples per second


def profile_server(pid: int, port: int, api_key: str, options: argparse.Namespace) -> list[str]:
    """Sample the server with py-spy while ``--pair-clients`` clients post /predict."""
    spy = shutil.which("py-spy")
    if spy is None:
        return ["py-spy is not on PATH (pip install py-spy: a tool, not a dependency)"]
    seconds = max(3, int(options.seconds))
    command = [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--nonblocking"]
    command += ["--rate", str(PROFILE_RATE), "--format", "raw", "--nolineno"]
    recorder = subprocess.Popen(
        [*command, "--output", str(options.profile)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    one = _request("POST", "/predict", json.dumps(EXAMPLE_ENCOUNTER).encode(), api_key)
    # Drive for longer than py-spy samples, so its whole window is under load.
    figures = measure("/predict", port, one, options.pair_clients, 10**9, seconds + 3)
    if recorder.wait(timeout=60) != 0 or not options.profile.exists():
        return [f"py-spy failed (exit {recorder.returncode}): it needs ptrace rights on the server"]
    return [figures.line(), *profile_table(options.profile, figures.rate * seconds)]


def main() -> None:
    """Parse options, run every phase, print the figures, always stop the server."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="Holds mlflow.db with a champion."
    )
    parser.add_argument(
        "--requests", type=int, default=3000, help="Requests per phase (upper bound)."
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="Time per phase (upper bound).")
    parser.add_argument("--concurrency", default="1,4,16", help="Comma-separated client counts.")
    parser.add_argument(
        "--batch-rows", type=int, default=20_000, help="Rows for in-process scoring."
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="Rounds of the /predict-against-/health pair."
    )
    parser.add_argument("--pair-clients", type=int, default=16, help="Clients of that pair.")
    parser.add_argument(
        "--profile",
        type=Path,
        help="Also sample the server with py-spy (on PATH) under /predict at --pair-clients "
        "clients, keep the raw stacks in this file and print where the time goes.",
    )
    parser.add_argument(
        "--only-summary", action="store_true", help="Skip the per-concurrency table and batches."
    )
    options = parser.parse_args()
    if not (options.data_dir / "mlflow.db").exists():
        sys.exit(
            f"no registry in {options.data_dir}: run `healthpredict demo` first or pass --data-dir"
        )
    api_key, port = secrets.token_hex(16), _free_port()
    with tempfile.TemporaryDirectory(prefix="healthpredict-bench-") as folder:
        server = start_server(options.data_dir, port, api_key, Path(folder))
        try:
            ready = wait_ready(port, server, timeout=180)
            print(f"service on 127.0.0.1:{port}: {ready}")
            if not options.only_summary:
                run_phases(port, api_key, options)
            print(f"\n/predict against /health, same server ({options.rounds} rounds):")
            for line in pair_summary(server.pid, port, api_key, options):
                print("  " + line)
            if options.profile:
                print(f"\nwhere a /predict request spends its time (py-spy, {options.profile}):")
                for line in profile_server(server.pid, port, api_key, options):
                    print("  " + line)
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    if options.only_summary:
        return
    print("\nin-process batch scoring (same champion):")
    for line in batch_scoring(options.data_dir, options.batch_rows):
        print("  " + line)


def run_phases(port: int, api_key: str, options: argparse.Namespace) -> None:
    """Every HTTP phase against the running server."""
    one = _request("POST", "/predict", json.dumps(EXAMPLE_ENCOUNTER).encode(), api_key)
    health = _request("GET", "/health", b"", api_key)
    batch = json.dumps({"encounters": contract_records(1000, seed=5)}).encode()
    levels = [int(c) for c in options.concurrency.split(",")]
    print(f"{'phase':<28} {'count':>11} {'throughput':>13}  latency")
    for clients in levels:
        for name, raw in ((f"/predict  x{clients}", one), (f"/health   x{clients}", health)):
            print(measure(name, port, raw, clients, options.requests, options.seconds).line())
    figures = measure(
        "/predict/batch (1000 rows) x1",
        port,
        _request("POST", "/predict/batch", batch, api_key),
        1,
        30,
        options.seconds,
    )
    print(figures.line() + f"  = {1000 * figures.requests / figures.seconds:,.0f} rows/s over HTTP")


if __name__ == "__main__":
    main()
