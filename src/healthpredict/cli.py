"""The ``healthpredict`` command line: every lifecycle step is a subcommand here.

Commands only parse options, call one flow, and print its result; errors the user can act on
are printed as one line naming the problem, with a non-zero exit status.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from healthpredict.settings import Settings, get_settings

app = typer.Typer(
    help="Health Predict: 30-day readmission risk, with its MLOps lifecycle.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Open, check and prepare the raw extract.", no_args_is_help=True)
app.add_typer(data_app, name="data")
images_app = typer.Typer(help="Build the project's container images.", no_args_is_help=True)
app.add_typer(images_app, name="images")
stack_app = typer.Typer(help="The compose stack: up, healthy, and down.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
outcomes_app = typer.Typer(
    help="Readmission outcomes, joined to what was predicted.", no_args_is_help=True
)
app.add_typer(outcomes_app, name="outcomes")
drift_app = typer.Typer(
    help="What the field monitor found, and what people said of it.", no_args_is_help=True
)
app.add_typer(drift_app, name="drift")
T = TypeVar("T")


class StreamChoice(StrEnum):
    """Which production stream ``simulate`` replays."""

    NATURAL = "natural"
    EXCHANGEABLE = "exchangeable"


SourceOption = Annotated[
    str | None, typer.Option("--source", help="Raw extract location (overrides settings).")
]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Configure logging once for every command."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    chatty = ("alembic", "mlflow", "urllib3", "botocore", "matplotlib", "kaleido", "choreographer")
    for noisy in chatty:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The cloudpickle format is chosen on purpose (see modeling/registry.py); repeating
    # MLflow's warning about it at every registration only buries the progress lines.
    logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
    # Model downloads must not draw progress bars into logs or the demo's output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the command's explicit options (flat names) on top."""
    given = {key: value for key, value in overrides.items() if value is not None}
    return Settings.from_flat(**given) if given else get_settings()


def _run(action: Callable[[], T]) -> T:
    """Run ``action``; turn expected failures into one clear line and exit status 1."""
    try:
        return action()
    except Exception as error:
        if not isinstance(error, _expected_errors()):
            raise
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from error


def _expected_errors() -> tuple[type[Exception], ...]:
    """Errors a user can act on; imported only when one happens (MLflow costs seconds).

    Our own expected failures all derive from :class:`HealthPredictError`; the two others are
    third-party errors that cannot: an unreachable registry (MLflow) and bad settings (pydantic).
    """
    from mlflow.exceptions import MlflowException

    from healthpredict.errors import HealthPredictError

    return (HealthPredictError, MlflowException, ValidationError)


@data_app.command("contract")
def data_contract() -> None:
    """Print the written contract of a raw encounter record."""
    from healthpredict.data.schema import contract_markdown

    typer.echo(contract_markdown())


@data_app.command("validate")
def data_validate(source: SourceOption = None) -> None:
    """Check the raw extract against the contract; exit 1 if it breaks the tolerance."""
    from healthpredict.data.source import open_raw
    from healthpredict.data.validate import validate_raw

    settings = _run(lambda: _settings(data_source=source))
    raw = _run(lambda: open_raw(settings.data.data_source, settings.data.data_sha256))
    report = _run(lambda: validate_raw(raw.frame)).report
    typer.echo(f"sha256 {raw.sha256}\n{report.summary()}")
    _run(lambda: report.raise_if_exceeds(settings.data.max_invalid_fraction))


@data_app.command("prepare")
def data_prepare(
    source: SourceOption = None,
    n_batches: Annotated[int | None, typer.Option(help="Production batches.")] = None,
    initial_fraction: Annotated[float | None, typer.Option(help="Initial window share.")] = None,
) -> None:
    """Validate, clean and cut the extract into the timeline (Parquet + manifest)."""
    from healthpredict.pipelines.prepare_data import prepare_data
    from healthpredict.reporting.summary import format_preparation_summary

    settings = _run(
        lambda: _settings(
            data_source=source, n_batches=n_batches, initial_window_fraction=initial_fraction
        )
    )
    summary = _run(lambda: prepare_data(settings))
    typer.echo(format_preparation_summary(summary))


@app.command("train")
def train() -> None:
    """Train on the initial window, evaluate on the test window, track and register."""
    from healthpredict.pipelines.train_and_register import train_and_register
    from healthpredict.reporting.summary import format_training_summary

    settings = _run(_settings)
    typer.echo(format_training_summary(_run(lambda: train_and_register(settings))))


@app.command("tune")
def tune(
    trials: Annotated[int | None, typer.Option(help="Trial budget.")] = None,
    time_budget: Annotated[float | None, typer.Option(help="Time budget, seconds.")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Existing Ray cluster.")] = None,
) -> None:
    """Search hyper-parameters with Ray Tune, refit the best, register it as challenger."""
    from healthpredict.pipelines.tune_and_register import tune_and_register
    from healthpredict.reporting.summary import format_search_summary

    settings = _run(
        lambda: _settings(
            tune_trials=trials, tune_time_budget_seconds=time_budget, ray_address=ray_address
        )
    )
    typer.echo(format_search_summary(_run(lambda: tune_and_register(settings))))


@app.command("promote")
def promote() -> None:
    """Run the promotion gate: challenger vs champion on the gate window."""
    from healthpredict.pipelines.promote import promote as run_gate
    from healthpredict.reporting.summary import format_gate_decision

    settings = _run(_settings)
    typer.echo(format_gate_decision(_run(lambda: run_gate(settings))))


@app.command("rollback")
def rollback(
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "manual rollback",
) -> None:
    """Put the previous champion back (recorded on both versions)."""
    from healthpredict.pipelines.promote import rollback as run_rollback

    settings = _run(_settings)
    record = _run(lambda: run_rollback(settings, reason))
    typer.echo(f"champion v{record.from_version} -> v{record.to_version}: {record.reason}")


@app.command("simulate")
def simulate(
    policy: Annotated[str | None, typer.Option(help="Policy name (policies file).")] = None,
    run_name: Annotated[str | None, typer.Option(help="Run name; default from set+policy.")] = None,
    stream: Annotated[
        StreamChoice, typer.Option(help="Time order, or the no-drift exchangeable control.")
    ] = StreamChoice.NATURAL,
    what_if: Annotated[
        bool, typer.Option(help="Replay in process; versions in a folder, the registry untouched.")
    ] = False,
    restart: Annotated[bool, typer.Option(help="Forget the run's records and start over.")] = False,
    max_batches: Annotated[int | None, typer.Option(help="Stop after this many batches.")] = None,
    service_url: Annotated[
        str | None,
        typer.Option(help="Send traffic to this running service instead of starting one."),
    ] = None,
    initial_version: Annotated[
        str | None,
        typer.Option(help="Start from this registered version (must not have seen the stream)."),
    ] = None,
) -> None:
    """Replay the production batches through the service: predictions, outcomes, monitoring,
    retraining, promotion (resumable)."""
    from healthpredict.loop.plans import build_plan
    from healthpredict.loop.replay import replay
    from healthpredict.reporting.summary import format_batch_table, format_replay_speed

    settings = _run(lambda: _settings(policy=policy))
    plan = _run(
        lambda: build_plan(
            settings,
            settings.monitoring.policy,
            run_name,
            stream.value,
            what_if,
            initial_version=initial_version,
        )
    )
    result = _run(lambda: replay(settings, plan, restart, max_batches, typer.echo, service_url))
    typer.echo(format_batch_table(result.history))
    typer.echo(format_replay_speed(result))


@app.command("monitor")
def monitor(
    window: Annotated[
        int | None, typer.Option(help="Window number; default: the last complete one.")
    ] = None,
    at: Annotated[
        datetime | None, typer.Option(help="Monitor the window containing this time (ISO 8601).")
    ] = None,
    deployment: Annotated[
        str | None, typer.Option(help="Whose log (default: the setting).")
    ] = None,
    policy: Annotated[
        str | None, typer.Option(help="Retraining policy (default: the setting).")
    ] = None,
    promote: Annotated[
        bool, typer.Option(help="Move the champion alias when the gate passes (else: record only).")
    ] = True,
) -> None:
    """Monitor one window of a deployment's prediction log, act on it, print the windows so far."""
    from healthpredict.loop.live import live_context
    from healthpredict.loop.runner import run_window
    from healthpredict.monitoring.history import read_history
    from healthpredict.monitoring.store import store_errors
    from healthpredict.reporting.summary import format_batch_table

    settings = _run(_settings)
    context = _run(lambda: live_context(settings, policy, deployment, promote, typer.echo))
    clock = context.clock
    number = _run(lambda: window or (clock.containing(at) if at else clock.last_complete()).number)
    with store_errors(settings.monitoring_url):
        pending = _run(lambda: run_window(context, number))
    typer.echo(pending.text)
    if pending.status != "empty":
        typer.echo(
            format_batch_table(_run(lambda: read_history(context.engine, context.deployment)))
        )


@app.command("score")
def score(
    source: Annotated[
        str, typer.Argument(help="Encounters, CSV or Parquet: a path, file://, s3:// or https://.")
    ],
    output: Annotated[str, typer.Argument(help="Scores, Parquet: a path or s3://.")],
    model_version: Annotated[
        str | None, typer.Option(help="Registered version (default: the champion).")
    ] = None,
    reasons: Annotated[
        int, typer.Option(min=0, max=50, help="Strongest contributions per row (0: none).")
    ] = 0,
    rejects: Annotated[
        str | None,
        typer.Option(
            help="Rows breaking the contract (default: OUTPUT's name with .rejects.parquet)."
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Run on this Ray cluster with Ray Data (INPUT: Parquet file or folder; "
            "OUTPUT: a folder of parts)."
        ),
    ] = None,
) -> None:
    """Score a whole file of encounters: hashed key, risk, band, decision, model version."""
    import sys

    from rich.progress import Progress

    from healthpredict.pipelines.score import score_file

    settings = _run(lambda: _settings(ray_address=ray_address))
    if settings.search.ray_address:
        from healthpredict.pipelines.score_on_ray import score_on_ray

        address = settings.search.ray_address
        typer.echo(
            _run(
                lambda: score_on_ray(
                    settings, source, output, address, model_version, reasons, rejects
                )
            ).summary()
        )
        return
    with Progress(transient=True, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("scoring", total=None)

        def advance(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        report = _run(
            lambda: score_file(settings, source, output, model_version, reasons, rejects, advance)
        )
    typer.echo(report.summary())


@outcomes_app.command("load")
def outcomes_load(
    source: Annotated[
        str, typer.Argument(help="CSV or Parquet: a path, file://, s3:// or https://.")
    ],
    deployment: Annotated[
        str | None, typer.Option(help="Whose log (default: the setting).")
    ] = None,
) -> None:
    """Record readmission outcomes from a file (columns encounter_id, readmitted)."""
    from healthpredict.data.pseudonym import load_or_create_salt
    from healthpredict.monitoring import outcomes
    from healthpredict.monitoring.store import make_engine, store_errors

    settings = _run(_settings)
    records = _run(lambda: outcomes.parse_records(outcomes.read_file(source)))
    engine = make_engine(settings.monitoring_url)
    try:
        with store_errors(settings.monitoring_url):
            report = _run(
                lambda: outcomes.record(
                    engine,
                    deployment or settings.monitoring.deployment,
                    records,
                    load_or_create_salt(settings),
                    source,
                )
            )
    finally:
        engine.dispose()
    typer.echo(report.summary())


@drift_app.command("acknowledge")
def drift_acknowledge(
    field: Annotated[str, typer.Argument(help="The contract field whose new state is known.")],
    reason: Annotated[str, typer.Option(help="Why it moved (shown with the field).")],
    by: Annotated[
        str | None, typer.Option(help="Who acknowledges (default: the login name).")
    ] = None,
    deployment: Annotated[
        str | None, typer.Option(help="Whose log (default: the setting).")
    ] = None,
) -> None:
    """Record that a field off the reference is known and why: shown as acknowledged until it
    moves again or a promotion re-bases the reference."""
    import getpass

    from healthpredict.loop.field_history import acknowledge
    from healthpredict.monitoring.store import make_engine, store_errors
    from healthpredict.monitoring.tables import create_schema

    settings = _run(_settings)
    engine = make_engine(settings.monitoring_url)
    try:
        with store_errors(settings.monitoring_url):
            create_schema(engine)
            target = deployment or settings.monitoring.deployment
            done, window = _run(
                lambda: acknowledge(engine, target, field, by or getpass.getuser(), reason)
            )
    finally:
        engine.dispose()
    typer.echo(
        f"{field} (v{done.model_version}, moved in w{done.since_window:03d}, newest window "
        f"w{window:03d}): {done.describe()}"
    )


@images_app.command("build")
def images_build(
    tag: Annotated[str, typer.Option(help="Tag of the images built.")] = "0.1.0",
) -> None:
    """Build the service and the Airflow image with Docker or podman (on stand-in bases where
    the upstream ones cannot be pulled)."""
    from healthpredict.delivery.images import build_images

    for built in _run(lambda: build_images(tag)):
        typer.echo(f"{built.tag}: built on {built.base} in {built.seconds:.0f} s")


EnvFileOption = Annotated[
    Path, typer.Option("--env-file", help="The stack's secrets (deploy/compose/init_env.py).")
]
ProjectOption = Annotated[str, typer.Option(help="Compose project name.")]


@stack_app.command("up")
def stack_up(
    env_file: EnvFileOption = Path("deploy/compose/.env"),
    project: ProjectOption = "healthpredict",
    override: Annotated[
        list[Path] | None, typer.Option("--file", help="A further compose file on top.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for health.")] = 900.0,
) -> None:
    """Build every image, bring the compose stack up, and wait until every service is
    healthy (stand-ins where the upstream images cannot be pulled)."""
    from healthpredict.delivery import stack

    if not env_file.is_file():
        typer.secho(f"error: no {env_file}: run deploy/compose/init_env.py", err=True)
        raise typer.Exit(code=1)
    compose = stack.Stack.for_machine(project, env_file, override or ())
    for container in _run(lambda: stack.up(compose, timeout)):
        typer.echo(f"{container.service}: {container.health or container.status}")


@stack_app.command("down")
def stack_down(
    env_file: EnvFileOption = Path("deploy/compose/.env"),
    project: ProjectOption = "healthpredict",
) -> None:
    """Stop the stack and remove its containers and volumes (its data goes with them)."""
    from healthpredict.delivery import stack

    _run(lambda: stack.down(stack.Stack.for_machine(project, env_file)))
    typer.echo(f"{project}: down, nothing left")


@app.command("report")
def report(
    run: Annotated[str | None, typer.Option(help="Main run; default: the newest one.")] = None,
) -> None:
    """Write the PNG plots and the interactive dashboard of the simulation runs."""
    from healthpredict.pipelines.report import write_report

    settings = _run(_settings)
    written = _run(lambda: write_report(settings, run))
    typer.echo(f"runs: {', '.join(written.runs)}")
    typer.echo(f"plots: {', '.join(str(p) for p in written.pngs)}")
    typer.echo(f"dashboard: {written.dashboard.resolve()}")


@app.command("demo")
def demo(source: SourceOption = None) -> None:
    """The main job: prepare, search, train, register, simulate every batch, write the dashboard."""
    from healthpredict.demo import run_main_job

    settings = _run(lambda: _settings(data_source=source))
    _run(lambda: run_main_job(settings, typer.echo))


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (overrides config).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (overrides settings).")] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request line.")] = False,
) -> None:
    """Serve the registered champion over HTTP (needs HEALTHPREDICT_API_KEY; docs/serving.md)."""
    import uvicorn

    from healthpredict.serving.security import ServingConfigError, check_keys

    settings = _run(lambda: _settings(serve_host=host, serve_port=port))
    try:
        check_keys(settings)  # before the heavy imports: a misconfiguration fails at once
    except ServingConfigError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from error
    from healthpredict.serving.app import create_app

    service = create_app(settings)
    # One process: the model store and the prediction-log writer are per process; scale out
    # with replicas (Kubernetes), not uvicorn workers.
    uvicorn.run(
        service,
        host=settings.serving.serve_host,
        port=settings.serving.serve_port,
        access_log=access_log,
        log_config=None,
        server_header=False,
    )


@app.command("config")
def show_config(
    markdown: Annotated[bool, typer.Option(help="Print the reference table instead.")] = False,
) -> None:
    """Print the settings in force (secrets masked), or the configuration reference."""
    if markdown:
        from healthpredict.reporting.settings_reference import settings_reference

        typer.echo(settings_reference())
        return
    settings = _run(_settings)
    for name, value in settings.flat().items():
        typer.echo(f"{name} = {value}")
    typer.echo(f"tracking_uri (effective) = {settings.tracking_uri}")
