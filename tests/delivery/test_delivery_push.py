"""The delivery DAG's build and push, for real: podman builds the service image and pushes it to
a registry on loopback (Debian's ``docker-registry``), and the digest it pushed is checked
against the registry's own answer. Only the kubectl steps stay in the journal (a cluster dry
run: no Kubernetes API server runs here); in their place the test starts the pushed image, as
the Deployment's pods would, so the smoke test checks a container of exactly that image.
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from healthpredict.delivery import engine, images
from healthpredict.loop.service import free_port
from tests.delivery.local_registry import LocalRegistry, registry_binary_or_skip
from tests.support.airflow_env import RunResult, environment, run_dag
from tests.support.containers import MODEL, Registry, engine_or_skip, run_engine

# Airflow's task timeouts use SIGALRM, which would silence pytest-timeout's signal method.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(1500, method="thread")]
DELIVERY = "healthpredict_delivery"
REPOSITORY = "hp-deliv-healthpredict"
TAG = "0a1b2c3d"
API_KEY = "delivery-push-test-key-0123456789"
KUBECTL_STEPS = ["record-revision", "roll-out", "rollout-status"]


@dataclass(frozen=True)
class Delivered:
    """The first delivery: its run, its journal, and what it shipped."""

    run: RunResult
    journal: list[dict[str, Any]]
    image: str
    pods: str  # the container standing in for the Deployment's pods
    env: dict[str, str]
    seconds: float

    @property
    def digest(self) -> str:
        """The digest the push reported."""
        return str(_event(self.journal, "pushed")["digest"])


@pytest.fixture(scope="module")
def podman() -> list[str]:
    command = engine_or_skip()
    if not engine.is_podman(command):
        pytest.skip("these tests drive podman (--tls-verify, --digestfile, a second store)")
    return command


@pytest.fixture(scope="module")
def local_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    registry_binary_or_skip()
    registry = LocalRegistry(tmp_path_factory.mktemp("hp-deliv-registry"))
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="module")
def dagbag() -> Any:
    from tests.support.airflow_env import dag_bag

    return dag_bag()


def _env(folder: Path, registry: str, podman: list[str], **more: str) -> dict[str, str]:
    """A cluster dry run pushing to ``registry`` with podman, journaled in ``folder``, with a
    login file of its own (podman refuses a REGISTRY_AUTH_FILE that does not exist)."""
    (folder / "auth.json").write_text('{"auths": {}}')
    return {
        "HEALTHPREDICT_DATA_DIR": str(folder / "data"),
        "HEALTHPREDICT_DELIVERY_JOURNAL_FILE": str(folder / "journal.jsonl"),
        "HEALTHPREDICT_DELIVERY_DRY_RUN": "false",
        "HEALTHPREDICT_DELIVERY_CLUSTER_DRY_RUN": "true",
        "HEALTHPREDICT_DELIVERY_DOCKER_COMMAND": shlex.join(podman),
        "HEALTHPREDICT_DELIVERY_REGISTRY": registry,
        "HEALTHPREDICT_DELIVERY_REPOSITORY": REPOSITORY,
        "HEALTHPREDICT_DELIVERY_REGISTRY_LOGIN": "none",
        "HEALTHPREDICT_DELIVERY_REGISTRY_INSECURE": "true",
        "HEALTHPREDICT_DELIVERY_SERVICE_URL": "http://127.0.0.1:1",
        "HEALTHPREDICT_API_KEY": API_KEY,
        # podman's runtime settings for these machines; a login file of this test only.
        "CONTAINERS_CONF": engine.engine_environment()["CONTAINERS_CONF"],
        "REGISTRY_AUTH_FILE": str(folder / "auth.json"),
        **more,
    }


def _journal(env: dict[str, str]) -> list[dict[str, Any]]:
    from healthpredict.delivery.commands import read_journal

    return read_journal(Path(env["HEALTHPREDICT_DELIVERY_JOURNAL_FILE"]))


def _event(journal: list[dict[str, Any]], event: str) -> dict[str, Any]:
    return next(e for e in journal if e["event"] == event)


def _steps(journal: list[dict[str, Any]], event: str = "command") -> list[tuple[str, bool]]:
    return [(e["step"], e["executed"]) for e in journal if e["event"] == event]


class PodsStandIn:
    """Starts the pushed image once the journal shows the push, as the Deployment's pods
    would after the rollout (which is only journaled here); pulled from the registry."""

    def __init__(self, journal: Path, run_argv: list[str]):
        self.journal, self.run_argv, self.error = journal, run_argv, ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="pods", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            try:
                lines = self.journal.read_text().splitlines() if self.journal.exists() else []
                pushed = any(json.loads(line)["event"] == "pushed" for line in lines if line)
            except ValueError:
                continue  # a line being written
            if pushed:
                done = subprocess.run(
                    self.run_argv,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    env=engine.engine_environment(),
                )
                self.error = done.stderr[-2000:] if done.returncode else ""
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=310)


@pytest.fixture(scope="module")
def delivered(
    podman: list[str],
    service_image: engine.Built,
    registry: Registry,
    local_registry: LocalRegistry,
    dagbag: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Delivered]:
    """One delivery of TAG: built on the service image's base, with the machine's sources."""
    folder, port = tmp_path_factory.mktemp("hp-deliv-run"), free_port()
    image, pods = f"{local_registry.host}/{REPOSITORY}:{TAG}", f"hp-deliv-pods-{port}"
    env = _env(
        folder,
        local_registry.host,
        podman,
        HEALTHPREDICT_DELIVERY_DOCKERFILE=str(images.SERVICE_DOCKERFILE),
        HEALTHPREDICT_DELIVERY_BUILD_CONTEXT=str(engine.ROOT),
        HEALTHPREDICT_DELIVERY_BASE_IMAGE=service_image.base,
        HEALTHPREDICT_DELIVERY_BUILD_HOST_SOURCES="true",
        HEALTHPREDICT_DELIVERY_SERVICE_URL=f"http://127.0.0.1:{port}",
        HEALTHPREDICT_DELIVERY_SMOKE_TIMEOUT_SECONDS="300",
    )
    standin = PodsStandIn(
        Path(env["HEALTHPREDICT_DELIVERY_JOURNAL_FILE"]),
        [
            *podman,
            "run",
            "-d",
            "--name",
            pods,
            "--pull=always",  # what the registry serves, as a node would pull it
            "--tls-verify=false",
            "-e",
            f"HEALTHPREDICT_API_KEY={API_KEY}",
            "-e",
            f"HEALTHPREDICT_MLFLOW_TRACKING_URI={registry.url_from_container}",
            "-e",
            f"HEALTHPREDICT_MODEL_NAME={MODEL}",
            "-e",
            "HEALTHPREDICT_ID_SALT=delivery-push-test-salt",
            "-p",
            f"127.0.0.1:{port}:8000",
            image,
        ],
    )
    started = time.monotonic()
    try:
        with environment(env):
            run = run_dag(dagbag.dags[DELIVERY], {"image_tag": TAG, "model_version": ""})
        seconds = time.monotonic() - started
        journal = _journal(env)
        # Fail here, once: the tests below would each run a delivery that cannot work.
        assert run.state == "success", (run.tasks, journal)
        assert not standin.error, f"the pods stand-in did not start: {standin.error}"
        yield Delivered(run, journal, image, pods, env, seconds)
    finally:
        standin.stop()
        run_engine("rm", "-f", "--time", "5", pods, check=False)
        run_engine("rmi", image, check=False)


def test_build_and_push_run_for_real_and_only_kubectl_is_journaled(delivered: Delivered) -> None:
    run, journal = delivered.run, delivered.journal
    assert run.state == "success", run.tasks
    assert run.tasks["roll_back"] == "skipped" and run.tasks["record_delivery"] == "success"
    # No login to a registry that needs none; the build and the push ran, kubectl did not.
    assert _steps(journal) == [
        ("build", True),
        ("push", True),
        *[(step, False) for step in KUBECTL_STEPS],
    ]
    # The registry was asked over its API: no tag before the build and the push, then the
    # digest it holds.
    questions = [
        (e["step"], e["executed"], e["answer"]) for e in journal if e["event"] == "question"
    ]
    assert questions == [
        ("image-exists", True, None),
        ("image-exists", True, None),
        ("push-digest", True, delivered.digest),
    ]
    push = next(e for e in journal if e.get("step") == "push")
    assert "--tls-verify=false" in push["argv"] and "--digestfile" in push["argv"]
    smoke = _event(journal, "smoke-test")
    assert smoke["passed"], smoke
    print(
        f"\nfigures: delivery {delivered.seconds:.1f} s; build_image "
        f"{run.seconds['build_image']:.1f} s (cached layers); push_image "
        f"{run.seconds['push_image']:.1f} s; digest {delivered.digest}"
    )


def test_the_registry_holds_the_pushed_digest(
    delivered: Delivered, local_registry: LocalRegistry
) -> None:
    assert REPOSITORY in local_registry.get("_catalog").json()["repositories"]
    assert local_registry.tags(REPOSITORY) == [TAG]
    pushed = _event(delivered.journal, "pushed")
    assert pushed["digest"] == pushed["registry_digest"] == local_registry.digest(REPOSITORY, TAG)


def test_the_image_pulled_back_is_the_one_built_and_the_one_serving(
    delivered: Delivered, podman: list[str], tmp_path: Path
) -> None:
    built = run_engine("image", "inspect", "--format", "{{.Id}}", delivered.image).stdout.strip()
    serving = run_engine("inspect", "--format", "{{.Image}}", delivered.pods).stdout.strip()
    assert serving == built
    # A store of its own, so every layer really comes from the registry (podman wants its
    # runroot path under 50 characters).
    runroot = tempfile.mkdtemp(prefix="hp-deliv-run-")
    store = [*podman, "--root", str(tmp_path / "root"), "--runroot", runroot]
    started = time.monotonic()
    try:
        _run([*store, "pull", "--quiet", "--tls-verify=false", delivered.image], timeout=600)
        pulled_in = time.monotonic() - started
        inspect = [*store, "image", "inspect", "--format", "{{.Id}} {{.Digest}}", delivered.image]
        assert _run(inspect).split() == [built, delivered.digest]
        print(f"\nfigures: pulled back into an empty store in {pulled_in:.1f} s")
    finally:
        _run([*store, "rmi", "-f", delivered.image], check=False)
        _unmount_under(tmp_path / "root")
        shutil.rmtree(tmp_path / "root", ignore_errors=True)
        shutil.rmtree(runroot, ignore_errors=True)


def _unmount_under(folder: Path) -> None:
    """Unmount what a failed podman left mounted in its store (its overlay folder is one)."""
    mounts = Path("/proc/mounts").read_text().splitlines()
    points = [line.split()[1] for line in mounts if line.split()[1].startswith(str(folder))]
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", point], capture_output=True, check=False)


def _run(argv: list[str], timeout: float = 120, check: bool = True) -> str:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=engine.engine_environment()
    )
    if check and done.returncode != 0:
        pytest.fail(f"{shlex.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def test_a_second_delivery_neither_builds_nor_pushes(
    delivered: Delivered, local_registry: LocalRegistry, dagbag: Any
) -> None:
    from healthpredict.delivery import rollout

    env = delivered.env  # the same journal: the tag is checked against the push it recorded
    before = len(_journal(env))
    with environment(env):
        run = run_dag(dagbag.dags[DELIVERY], {"image_tag": TAG, "model_version": ""})
        again = rollout.push_image(rollout.plan(TAG, ""))
    assert run.state == "success", run.tasks
    journal = _journal(env)[before:]
    assert _steps(journal) == [(step, False) for step in KUBECTL_STEPS]  # no build, no push
    answers = [e["answer"] for e in journal if e["event"] == "question"]
    assert answers == [delivered.digest] * 3  # build, push, and the direct call above
    assert again == {
        "pushed": False,
        "image": delivered.image,
        "digest": delivered.digest,
        "reason": "the registry has this tag",
    }
    assert local_registry.tags(REPOSITORY) == [TAG]


def test_a_bad_tag_is_refused_before_anything_is_built(
    delivered: Delivered, local_registry: LocalRegistry, dagbag: Any, tmp_path: Path
) -> None:
    env = {**delivered.env, "HEALTHPREDICT_DELIVERY_JOURNAL_FILE": str(tmp_path / "bad.jsonl")}
    with environment(env):
        run = run_dag(dagbag.dags[DELIVERY], {"image_tag": "latest", "model_version": ""})
    assert run.state == "failed", run.tasks
    assert run.tasks["plan"] == "failed" and run.tasks["build_image"] == "upstream_failed"
    assert [e["event"] for e in _journal(env)] == ["refused", "rollback"]
    latest = f"{local_registry.host}/{REPOSITORY}:latest"
    assert run_engine("image", "exists", latest, check=False).returncode == 1
    assert local_registry.tags(REPOSITORY) == [TAG]


def _tiny_image(podman: list[str], name: str) -> None:
    """A one-file image (``podman import``): a push that takes a second."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        data = b"hp-deliv\n"
        member = tarfile.TarInfo("hello.txt")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    subprocess.run(
        [*podman, "import", "-", name],
        input=archive.getvalue(),
        check=True,
        capture_output=True,
        timeout=120,
        env=engine.engine_environment(),
    )


def test_a_registry_with_a_password_login(
    podman: list[str], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from healthpredict.delivery import rollout
    from healthpredict.delivery.registry import RegistryError

    password = "hp-deliv-registry-password"
    locked = LocalRegistry(tmp_path_factory.mktemp("hp-deliv-locked"), login=("ci-bot", password))
    locked.start()
    tag = "0a1b2c3e"
    image = f"{locked.host}/{REPOSITORY}:{tag}"
    env = _env(
        tmp_path,
        locked.host,
        podman,
        HEALTHPREDICT_DELIVERY_REGISTRY_LOGIN="password",
        HEALTHPREDICT_DELIVERY_REGISTRY_USERNAME="ci-bot",
        HEALTHPREDICT_DELIVERY_REGISTRY_PASSWORD=password,
    )
    try:
        _tiny_image(podman, image)
        with environment(env):
            release = rollout.plan(tag, "")
            first, second = rollout.push_image(release), rollout.push_image(release)
        anonymous = {**env, "HEALTHPREDICT_DELIVERY_REGISTRY_LOGIN": "none"}
        with (
            environment(anonymous),
            pytest.raises(RegistryError, match="refused the anonymous request"),
        ):
            rollout.push_image(release)
        held = locked.digest(REPOSITORY, tag)
    finally:
        run_engine("rmi", image, check=False)
        locked.stop()
    assert first["pushed"] and first["digest"] == held
    assert second == {**second, "pushed": False, "digest": first["digest"]}
    journal = _journal(env)
    login = next(e for e in journal if e.get("step") == "registry-login")
    assert login["executed"] and login["argv"][-3:] == ["ci-bot", "--password-stdin", locked.host]
    assert password not in json.dumps(journal)
