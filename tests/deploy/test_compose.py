"""deploy/compose/compose.yaml: valid Compose, secrets only from the env file, health-gated."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import jsonschema
import pytest
import yaml

from healthpredict.settings import Settings
from tests.deploy.conftest import COMPOSE_DIR
from tests.deploy.interpolation import MissingVariableError, all_references, interpolate
from tests.deploy.support import ROOT

# Variable and key names that hold credentials.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY\b|_KEY_ID\b|TOKEN|SALT|FERNET|ROOT_USER")
COMPLETED = "service_completed_successfully"
HEALTHY = "service_healthy"


def _secrets(env_example: dict[str, str]) -> set[str]:
    # Secrets are exactly the variables committed without a value.
    return {name for name, value in env_example.items() if not value}


def _one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart") == "no"


def test_validates_against_the_compose_specification(
    compose_raw: dict[str, Any], compose: dict[str, Any], compose_schema: dict[str, Any]
) -> None:
    validator = jsonschema.Draft7Validator(compose_schema)
    for document in (compose_raw, compose):
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
        assert not errors, errors


def test_the_committed_example_alone_stops_compose(
    compose_raw: dict[str, Any], env_example: dict[str, str]
) -> None:
    with pytest.raises(MissingVariableError):
        interpolate(compose_raw, env_example)


def test_each_missing_secret_stops_compose_with_its_name(
    compose_raw: dict[str, Any], filled_env: dict[str, str], env_example: dict[str, str]
) -> None:
    for name in sorted(_secrets(env_example)):
        with pytest.raises(MissingVariableError, match=name):
            interpolate(compose_raw, {**filled_env, name: ""})


def test_secrets_are_always_required_never_defaulted(
    compose_raw: dict[str, Any], env_example: dict[str, str]
) -> None:
    secrets = _secrets(env_example)
    assert secrets, ".env.example lists no secrets"
    for ref in all_references(compose_raw):
        if ref.name in secrets or SECRET_NAME.search(ref.name):
            assert ref.name in secrets, f"{ref.name} looks secret but has a committed value"
            assert ref.op == ":?", f"${{{ref.name}{ref.op}...}}: a secret must use :?"


def test_env_example_lists_exactly_the_variables_compose_reads(
    compose_raw: dict[str, Any], env_example: dict[str, str]
) -> None:
    refs = all_references(compose_raw)
    assert {ref.name for ref in refs} == set(env_example)
    # A default in compose.yaml and the value in .env.example must not drift apart.
    for ref in refs:
        if ref.op == ":-":
            assert env_example[ref.name] == ref.arg, ref.name


def test_no_credential_is_written_into_the_file(compose_raw: dict[str, Any]) -> None:
    required = re.compile(r"\$\{\w+:\?[^}]*\}")
    text = (COMPOSE_DIR / "compose.yaml").read_text()
    # URL credentials come from a variable: user:${...}@host.
    passwords = re.findall(r"://[^:/\s]+:(\$\{[^}]*\}|[^@\s]+)@", text)
    assert len(passwords) >= 4, "expected the database URLs"
    for password in passwords:
        assert required.fullmatch(password), password
    for name, service in compose_raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            # A *_FILE setting is the path to a secret, not one.
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                assert required.fullmatch(str(value)), f"{name}.{key} = {value!r}"


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if _one_shot(service):
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert {"interval", "timeout", "retries"} <= set(check), name


def test_dependencies_wait_for_health_or_completion(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for target, rule in depends.items():
            expected = COMPLETED if _one_shot(services[target]) else HEALTHY
            assert rule.get("condition") == expected, f"{name} -> {target}"


def test_the_stack_starts_in_a_safe_order(compose: dict[str, Any]) -> None:
    def needs(name: str) -> set[str]:
        return set(compose["services"][name].get("depends_on") or {})

    assert {"postgres", "mlflow"} <= needs("healthpredict-service")
    assert {"postgres", "minio-setup"} <= needs("mlflow")
    for airflow in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor"):
        assert "airflow-init" in needs(airflow)
    assert {"mlflow", "airflow-apiserver"} <= needs("airflow-scheduler")


def test_mlflow_writes_to_the_bucket_minio_setup_creates(compose: dict[str, Any]) -> None:
    services = compose["services"]
    bucket = services["minio-setup"]["environment"]["MLFLOW_BUCKET"]
    mlflow = services["mlflow"]["environment"]
    assert mlflow["MLFLOW_ARTIFACTS_DESTINATION"].startswith(f"s3://{bucket}/")
    assert mlflow["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    # The server proxies artifacts; clients (Airflow tasks) must log through it.
    scheduler = services["airflow-scheduler"]["environment"]
    assert scheduler["HEALTHPREDICT_MLFLOW_ARTIFACT_LOCATION"].startswith("mlflow-artifacts:")
    assert mlflow["MLFLOW_SERVE_ARTIFACTS"] == "true"


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image", "")
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image!r} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image!r}"


def test_state_lives_on_declared_named_volumes(compose: dict[str, Any]) -> None:
    declared, used = set(compose["volumes"]), set()
    for service in compose["services"].values():
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).resolve().is_relative_to(ROOT), mount
            else:
                used.add(source)
    assert used == declared
    data = {"postgres": "/var/lib/postgresql/data", "minio": "/data"}
    for name, target in data.items():
        assert any(m.split(":")[1] == target for m in compose["services"][name]["volumes"])


def test_bind_mounts_point_at_the_repository(compose: dict[str, Any]) -> None:
    sources = {
        (COMPOSE_DIR / mount.split(":")[0]).resolve()
        for service in compose["services"].values()
        for mount in service.get("volumes") or []
        if mount.startswith(".")
    }
    assert sources == {ROOT / "dags", COMPOSE_DIR / "postgres" / "init-databases.sh"}
    assert (COMPOSE_DIR / "postgres" / "init-databases.sh").is_file()


def test_builds_use_the_project_dockerfiles(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            context = (COMPOSE_DIR / service["build"]["context"]).resolve()
            assert context == ROOT, name
            assert (context / service["build"]["dockerfile"]).is_file(), name


def test_ports_are_published_on_loopback_by_default(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports") or []:
            assert port.startswith("127.0.0.1:"), f"{name}: {port}"


def test_healthpredict_variables_are_real_settings(compose: dict[str, Any]) -> None:
    fields = set(Settings.flat_fields())
    for name, service in compose["services"].items():
        for key in service.get("environment") or {}:
            if key.startswith("HEALTHPREDICT_"):
                assert key.removeprefix("HEALTHPREDICT_").lower() in fields, f"{name}.{key}"


def test_the_real_env_file_is_git_ignored() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "-q", "deploy/compose/.env"], check=False
    )
    assert result.returncode == 0, "deploy/compose/.env must be git-ignored"


class _ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's merge tags: ``!override`` replaces, ``!reset`` removes."""


_ComposeLoader.add_constructor(
    "!override",
    lambda loader, node: loader.construct_sequence(node),  # type: ignore[arg-type]
)


def _standin_override() -> dict[str, Any]:
    return dict(yaml.load((COMPOSE_DIR / "compose.standin.yaml").read_text(), _ComposeLoader))


def test_the_standin_override_is_valid_compose(compose_schema: dict[str, Any]) -> None:
    errors = list(jsonschema.Draft7Validator(compose_schema).iter_errors(_standin_override()))
    assert not errors, [e.message for e in errors]


def test_the_standin_override_replaces_only_what_cannot_be_pulled(
    compose: dict[str, Any],
) -> None:
    # compose.yaml keeps the real images; the override swaps the two upstream services for
    # stand-ins, points the project builds at stand-in bases, and changes nothing else:
    # no port, secret, volume or dependency.
    override = _standin_override()["services"]
    assert set(override) <= set(compose["services"])
    for name, service in override.items():
        assert not {"ports", "volumes", "depends_on", "environment"} & set(service), name
        image = service.get("image", "")
        built = "build" in compose["services"][name]
        if built:
            assert set(service) == {"build"} and set(service["build"]) == {"args"}, name
            assert all(
                v.startswith("localhost/healthpredict-standin/")
                for v in service["build"]["args"].values()
            ), name
        elif image:
            assert image.startswith(("localhost/healthpredict-standin/", "healthpredict-")), name
    upstream = {n for n, s in compose["services"].items() if "build" not in s}
    assert upstream <= set(override), "every upstream image has a stand-in"


def test_airflow_init_waits_for_its_database_through_the_image_entrypoint(
    compose: dict[str, Any],
) -> None:
    # Not every compose implementation waits for a healthy dependency (podman-compose on
    # podman < 4.6): the image's entrypoint waits for the metadata database, so keep it.
    init = compose["services"]["airflow-init"]
    assert "entrypoint" not in init
    assert init["command"][:2] == ["bash", "-ec"]
