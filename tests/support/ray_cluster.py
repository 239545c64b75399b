"""A real multi-node Ray cluster on this machine, started with ``ray start``: tests, benchmarks.

:class:`LocalRayCluster` starts a head node and ``workers`` worker nodes as separate
``ray start --block`` processes of this interpreter's own ``ray`` script, each with its own
``--temp-dir``, CPUs, bounded object store and a custom resource naming the node, and with
every port two nodes on one host would otherwise share given explicitly (from a block of free
ports that a lock file reserves against other clusters started this way). It returns once the
GCS lists every node alive. On exit it stops exactly the processes it started, found by their
session id, and checks they are gone: never ``ray stop``, which stops every Ray on the machine.

What it proves and what it cannot: the nodes are separate raylets and object stores talking
over TCP, so scheduling, placement and object transfer between nodes are real; but they share
one host, one file system and one IP. Ray 2.60 replaces ``--node-ip-address 127.0.0.1`` by the
host's routable address and its servers listen on all interfaces, so the cluster runs with
token authentication: a driver needs ``RAY_AUTH_MODE=token`` (:attr:`LocalRayCluster.driver_env`)
and finds the token where Ray looks for it (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, else
``~/.ray/auth_token``, made with ``ray get-auth-token --generate`` if missing, as a local
``ray.init()`` would).

Example::

    import ray
    from tests.support.ray_cluster import LocalRayCluster

    with LocalRayCluster(num_cpus=1, workers=1) as cluster, cluster.driver():
        ray.init(address=cluster.address)  # or connect_ray(cluster.address)
        worker = cluster.nodes[1]  # nodes[0] is the head
        where = ray.remote(lambda: ray.get_runtime_context().get_node_id())
        assert ray.get(where.options(resources={worker.resource: 0.01}).remote()) == worker.node_id
    # cluster.driver() disconnected; a driver in a subprocess: env={**os.environ, **driver_env}
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

RESOURCE_PREFIX = "local_ray_"
_MAX_ROOT_CHARS = 40  # Ray's socket paths (<root>/<node>/session_<...>/sockets/...) are < 108
# Named ports of a node, as `ray start --<slot>-port`; the head's own three after them.
_NODE_SLOTS: tuple[str, ...] = ("node-manager", "object-manager", "dashboard-agent-listen")
_NODE_SLOTS += ("dashboard-agent-grpc", "metrics-export", "runtime-env-agent")
_HEAD_SLOTS = ("gcs", "client", "dashboard")
_WORKER_PORTS = 40  # one per worker process (and driver) of a node
_STRIDE = 64  # ports per node: named slots from +0, worker ports from +16
_PROBE = """
import json, sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False)
deadline, alive = time.monotonic() + float(sys.argv[3]), []
while time.monotonic() < deadline:
    alive = [node for node in ray.nodes() if node["Alive"]]
    if len(alive) >= int(sys.argv[2]):
        sys.exit(print(json.dumps({node["NodeID"]: node["Resources"] for node in alive})))
    time.sleep(0.5)
sys.exit(f"only {len(alive)} of {sys.argv[2]} nodes alive after {sys.argv[3]} s")
"""


class RayClusterError(RuntimeError):
    """The cluster did not start or stop cleanly (the message carries the nodes' log tails)."""


@dataclass(frozen=True)
class RayNode:
    """One node of the cluster."""

    name: str  # "head", "worker-1", ...
    node_id: str  # hex, as ray.get_runtime_context().get_node_id() returns it
    resource: str  # custom resource with 1 unit on this node only: request some to pin work
    temp_dir: Path  # its --temp-dir; logs under session_latest/logs


class LocalRayCluster:
    """A head and ``workers`` worker nodes started with ``ray start``; a context manager.

    Args:
        num_cpus: CPUs each node offers (1 by default, so two 1-CPU tasks need both nodes).
        workers: Worker nodes besides the head.
        object_store_mb: Object store size of each node.
        root: Parent folder of the cluster's temp folder (keep it short: Ray's socket paths
            are limited); /tmp by default. The temp folder is removed on exit.
        start_timeout: Seconds the whole start may take.

    The nodes also die with the thread that started them (Linux parent-death signal), so a
    killed test run leaves no cluster behind: start and stop it from one long-lived thread.
    """

    def __init__(
        self,
        num_cpus: int = 1,
        workers: int = 1,
        object_store_mb: int = 400,
        root: Path | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self.num_cpus, self.workers, self.object_store_mb = num_cpus, workers, object_store_mb
        self.start_timeout = start_timeout
        self._parent = root
        self._root: Path | None = None
        self._ports: _PortBlock | None = None
        self._processes: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self._nodes: tuple[RayNode, ...] = ()

    @property
    def address(self) -> str:
        """GCS address, for ``ray.init(address=...)``, RAY_ADDRESS or our ``ray_address``."""
        return f"127.0.0.1:{self._require_ports().port(0, 'gcs')}"

    @property
    def client_address(self) -> str:
        """Ray Client address (``ray://127.0.0.1:<port>``) of the head."""
        return f"ray://127.0.0.1:{self._require_ports().port(0, 'client')}"

    @property
    def nodes(self) -> tuple[RayNode, ...]:
        """The head first, then the workers in order."""
        return self._nodes

    @property
    def node_ids(self) -> frozenset[str]:
        """Ray node ids of all the nodes."""
        return frozenset(node.node_id for node in self._nodes)

    @property
    def driver_env(self) -> dict[str, str]:
        """Environment variables a driver needs to join: RAY_ADDRESS and token auth."""
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token"}

    @contextmanager
    def driver(self) -> Iterator[None]:
        """Let this process join the cluster inside the block (``ray.init``, ``connect_ray``).

        Ray reads RAY_AUTH_MODE once, at import, and never turns token auth on by itself for an
        explicit address: this sets it and reloads Ray's config (as ``ray.init()`` does for a
        local Ray). It first leaves any Ray the process is connected to; on exit it disconnects
        (``ray.shutdown()``) and restores both.
        """
        import ray
        from ray._raylet import Config  # type: ignore[attr-defined]

        ray.shutdown()  # a Ray this process joined earlier (a local search) must not stay in
        before = os.environ.get("RAY_AUTH_MODE")
        os.environ["RAY_AUTH_MODE"] = "token"
        Config.initialize("")
        try:
            yield
        finally:
            ray.shutdown()
            os.environ.pop("RAY_AUTH_MODE")
            if before is not None:
                os.environ["RAY_AUTH_MODE"] = before
            Config.initialize("")

    def __enter__(self) -> LocalRayCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the nodes and wait until the GCS lists them all alive.

        Raises:
            RayClusterError: A node exited or the cluster was incomplete in time (with the
                nodes' log tails); everything started so far is stopped first.
        """
        if self._processes:
            raise RayClusterError("this LocalRayCluster is already running")
        deadline = time.monotonic() + self.start_timeout
        try:
            self._root = Path(tempfile.mkdtemp(prefix="lrc-", dir=self._parent or "/tmp"))
            if len(str(self._root)) > _MAX_ROOT_CHARS:
                raise RayClusterError(f"{self._root} is too long a path for Ray's sockets")
            self._ports = _PortBlock.reserve(self.workers + 1)
            _ensure_token()
            self._launch(0)
            self._wait_for_head(deadline)
            for index in range(1, self.workers + 1):
                self._launch(index)
            self._nodes = self._wait_for_nodes(deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process of this cluster, check they are gone, remove its temp folder.

        Raises:
            RayClusterError: Some of its processes survived SIGKILL (their pids are named).
        """
        sessions = [process.pid for _, process, _ in self._processes]
        # `ray start --block` shuts its node down on SIGTERM; the workers before the head.
        for _, process, _ in reversed(self._processes):
            _signal(process.pid, signal.SIGTERM)
        for _, process, _ in reversed(self._processes):
            try:
                process.wait(timeout=10)  # a node still joining may not listen
            except subprocess.TimeoutExpired:
                _signal(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        survivors = _sweep(sessions, self._root)
        self._processes, self._nodes = [], ()
        if self._ports is not None:
            self._ports.release()
            self._ports = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
        if survivors:
            raise RayClusterError(f"Ray processes {survivors} of this cluster survived SIGKILL")

    def _launch(self, index: int) -> None:
        assert self._root is not None and self._ports is not None
        name = "head" if index == 0 else f"worker-{index}"
        head = [
            "--head",
            f"--port={self._ports.port(0, 'gcs')}",
            f"--ray-client-server-port={self._ports.port(0, 'client')}",
            "--include-dashboard=false",
            f"--dashboard-port={self._ports.port(0, 'dashboard')}",  # the minimal one binds it
        ]
        low, high = self._ports.worker_range(index)
        command = [
            str(Path(sys.executable).with_name("ray")),  # this venv's own Ray
            "start",
            "--block",
            *(head if index == 0 else [f"--address={self.address}"]),
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.num_cpus}",
            f"--object-store-memory={self.object_store_mb * 2**20}",
            f"--resources={json.dumps({_resource(name): 1})}",
            f"--temp-dir={self._temp_dir(name)}",
            "--disable-usage-stats",
            *(f"--{slot}-port={self._ports.port(index, slot)}" for slot in _NODE_SLOTS),
            f"--min-worker-port={low}",
            f"--max-worker-port={high}",
        ]
        log = self._root / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_node_env(),
                start_new_session=True,  # its own session id: how stop() finds its processes
                preexec_fn=_die_with_parent,  # one prctl call: safe before exec
            )
        self._processes.append((name, process, log))

    def _wait_for_head(self, deadline: float) -> None:
        """Until the head's GCS and raylet listen: workers join only a head that started."""
        assert self._ports is not None
        ports = [self._ports.port(0, "gcs"), self._ports.port(0, "node-manager")]
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                for port in ports:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                return
            except OSError:
                time.sleep(0.25)
        raise RayClusterError(f"the head node was not listening in time\n{self._tails()}")

    def _wait_for_nodes(self, deadline: float) -> tuple[RayNode, ...]:
        """Ask a throwaway driver for the alive nodes; map them by their custom resource."""
        assert self._root is not None
        timeout = f"{max(deadline - time.monotonic(), 5.0):.0f}"
        log = self._root / "probe.log"
        with log.open("wb") as err:
            probe = subprocess.Popen(
                [sys.executable, "-c", _PROBE, self.address, str(self.workers + 1), timeout],
                stdout=subprocess.PIPE,
                stderr=err,
                env={**_node_env(), **self.driver_env},
            )
        try:
            while probe.poll() is None and all(p.poll() is None for _, p, _ in self._processes):
                time.sleep(0.25)
        finally:
            probe.kill()
            out = probe.communicate()[0]
        self._check_alive()
        if probe.returncode != 0:
            last = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise RayClusterError(f"the cluster is incomplete: {last}\n{self._tails()}")
        node_of = {
            resource: node_id
            for node_id, resources in json.loads(out).items()
            for resource in resources
        }
        return tuple(
            RayNode(name, node_of[_resource(name)], _resource(name), self._temp_dir(name))
            for name, _, _ in self._processes
        )

    def _check_alive(self) -> None:
        for name, process, _ in self._processes:
            if process.poll() is not None:
                raise RayClusterError(
                    f"the Ray {name} node exited ({process.returncode})\n{self._tails()}"
                )

    def _tails(self) -> str:
        """The last lines of each node's `ray start` output and raylet.err."""
        parts = []
        for name, _, log in self._processes:
            raylet = self._temp_dir(name) / "session_latest" / "logs" / "raylet.err"
            for path in (log, raylet):
                if path.is_file():
                    lines = path.read_text(errors="replace").splitlines()[-25:]
                    parts.append(f"--- {name}: {path.name} ---\n" + "\n".join(lines))
        return "\n".join(parts)

    def _temp_dir(self, name: str) -> Path:
        assert self._root is not None
        return self._root / name

    def _require_ports(self) -> _PortBlock:
        if self._ports is None:
            raise RayClusterError("the cluster is not running")
        return self._ports


class _PortBlock:
    """Consecutive free TCP ports for a whole cluster, reserved by an advisory lock file.

    The block lies below the kernel's ephemeral range (which `bind(0)` draws from) and above
    the worker ports a default `ray start` uses (10002-19999), so neither collides later.
    """

    def __init__(self, start: int, lock: int) -> None:
        self.start, self._lock = start, lock

    @classmethod
    def reserve(cls, n_nodes: int) -> _PortBlock:
        size = n_nodes * _STRIDE
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        top = max(min(ephemeral_low, 32768) - size, 20001)
        folder = Path(tempfile.gettempdir()) / "local-ray-cluster-ports"
        folder.mkdir(exist_ok=True)
        for _ in range(200):
            start = random.randrange(20000, top, _STRIDE)
            lock = os.open(folder / f"{start}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock)
                continue
            if all(_is_free(port) for port in range(start, start + size)):
                return cls(start, lock)
            os.close(lock)
        raise RayClusterError(f"found no block of {size} free ports between 20000 and {top}")

    def port(self, node: int, slot: str) -> int:
        """The port of a named slot (a `ray start` port flag, or gcs/client/dashboard)."""
        return self.start + node * _STRIDE + (_NODE_SLOTS + _HEAD_SLOTS).index(slot)

    def worker_range(self, node: int) -> tuple[int, int]:
        """The node's --min-worker-port and --max-worker-port."""
        low = self.start + node * _STRIDE + 16
        return low, low + _WORKER_PORTS - 1

    def release(self) -> None:
        os.close(self._lock)  # closing drops the flock


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))  # Ray binds all interfaces too
            return True
        except OSError:
            return False


def _resource(name: str) -> str:
    return RESOURCE_PREFIX + name.replace("-", "_")


def _node_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}


def _ensure_token() -> None:
    """Make sure Ray finds a token where a local ``ray.init()`` would, made the way it would."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    if not (Path.home() / ".ray" / "auth_token").is_file():
        subprocess.run(  # it prints the token: captured and dropped
            [str(Path(sys.executable).with_name("ray")), "get-auth-token", "--generate"],
            check=True,
            capture_output=True,
            timeout=60,
        )


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _sweep(sessions: list[int], root: Path | None, grace: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL, whatever is left of the cluster; return the pids still alive."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = _cluster_processes(sessions, root)
        for pid in left:
            _signal(pid, sig)
        end = time.monotonic() + grace
        while left and time.monotonic() < end:
            time.sleep(0.2)
            left = _cluster_processes(sessions, root)
        if not left:
            return []
    return left


def _cluster_processes(sessions: list[int], root: Path | None) -> list[int]:
    """Live (not zombie) processes of ours in the nodes' sessions or naming the temp folder.

    Ray puts each worker in its own process group but leaves its session alone, so the session
    id finds workers even after they renamed themselves (``ray::IDLE``).
    """
    marker = f"{root}/".encode() if root is not None else None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] in ("Z", "X") or entry.stat().st_uid != os.getuid():
                continue
            named = marker is not None and marker in (entry / "cmdline").read_bytes()
            if int(fields[3]) in sessions or named:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # it ended meanwhile
    return found
