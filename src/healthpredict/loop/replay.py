"""The replay: a traffic and outcome generator driving the loop a deployment runs.

Batch ``n`` of the stream, with the scenarios active on it injected, is sent as window ``n``'s
prediction requests (through the real service for the main run, or the service's code in
process for what-if comparisons); the outcomes of the batch served ``label_delay_batches``
windows earlier are sent as a hospital sends them; then the window is monitored exactly as
``healthpredict monitor`` monitors a deployment (:func:`~healthpredict.loop.runner.run_window`)
and, after a promotion, the service is made to serve the new champion before the next batch.
After the last batch the outstanding outcomes arrive and one more, empty, window measures what
the last champion was worth.

A replay never time-travels: it refuses to start from a model trained on any encounter of the
stream it replays (or on production data, which for a replay of the timeline is that stream),
and names the version to start from instead. A killed replay resumes at its first uncommitted
window; the partial log of that window is sent again from scratch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Engine, delete, insert

from healthpredict.data.pseudonym import load_or_create_salt
from healthpredict.loop import replay_log, streams
from healthpredict.loop.context import LoopContext, LoopError, Origin, Progress, ensure_deployment
from healthpredict.loop.models import ModelSlot
from healthpredict.loop.pending import PendingWindow
from healthpredict.loop.runner import run_window
from healthpredict.loop.streams import Stream, require_unseen
from healthpredict.loop.traffic import HttpTraffic, InProcessTraffic, Served, Traffic
from healthpredict.loop.windows import WindowClock
from healthpredict.monitoring.history import RunHistory, read_history
from healthpredict.monitoring.policy import Policy
from healthpredict.monitoring.scenarios import Injection, ScenarioSet, inject
from healthpredict.monitoring.store import make_engine, store_errors
from healthpredict.monitoring.tables import create_schema, scenario_injections
from healthpredict.settings import Settings


@dataclass(frozen=True)
class ReplayPlan:
    """Everything that defines a replay.

    Attributes:
        run: The replay's deployment name (its own prediction log in the store).
        policy_name: The retraining policy, by name.
        policy: The policy.
        scenarios: Injected on the batches.
        stream: The batches and the initial training data.
        slot: Where versions live (the registry for the main run, a folder for what-ifs).
        through_service: Send traffic to the real service (else: the same code in process).
        initial_version: The version a new run starts from (default: the champion).
    """

    run: str
    policy_name: str
    policy: Policy
    scenarios: ScenarioSet
    stream: Stream
    slot: ModelSlot
    through_service: bool
    initial_version: str | None = None


@dataclass(frozen=True)
class ReplayResult:
    """The history of the replay and how fast its traffic went."""

    history: RunHistory
    requests: int
    records: int
    serve_seconds: float
    seconds: float

    @property
    def requests_per_second(self) -> float:
        """Prediction requests per second of sending."""
        return self.requests / self.serve_seconds if self.serve_seconds else 0.0


def context_for(
    settings: Settings, plan: ReplayPlan, engine: Engine, progress: Progress | None = None
) -> LoopContext:
    """The loop's context for a replay: its deployment, a clock starting at the origin."""
    origin = Origin(
        plan.stream.kind,
        plan.scenarios.name,
        plan.scenarios.model_dump(mode="json"),
        plan.stream.data_hash,
        len(plan.stream.batches),
    )
    return LoopContext(
        settings=settings,
        engine=engine,
        deployment=plan.run,
        clock=WindowClock.from_settings(settings.monitoring),
        policy_name=plan.policy_name,
        policy=plan.policy,
        slot=plan.slot,
        initial_data=lambda: plan.stream.reference,
        owns_champion=True,
        origin=origin,
        reports_dir=settings.data.simulation_dir / plan.run / "reports",
        progress=progress or (lambda _line: None),
    )


def replay(
    settings: Settings,
    plan: ReplayPlan,
    restart: bool = False,
    max_batches: int | None = None,
    progress: Progress | None = None,
    service_url: str | None = None,
) -> ReplayResult:
    """Run or resume ``plan``; return its whole recorded history.

    Raises:
        LoopError: A time-travelling initial model, a changed configuration, a service that
            fails; StoreUnavailableError: the store cannot be reached.
    """
    engine = make_engine(settings.monitoring_url)
    started = time.perf_counter()
    try:
        with store_errors(settings.monitoring_url):
            create_schema(engine)
            if restart:
                replay_log.forget(engine, settings, plan.run, plan.slot)
            context = context_for(settings, plan, engine, progress)
            totals = _drive(context, plan, max_batches, service_url)
            history = read_history(engine, plan.run)
    finally:
        engine.dispose()
    elapsed = time.perf_counter() - started
    return ReplayResult(history, totals.requests, totals.accepted, totals.seconds, elapsed)


def _drive(
    context: LoopContext, plan: ReplayPlan, max_batches: int | None, service_url: str | None
) -> Served:
    totals = Served()
    if not replay_log.started(context):
        _start_from(plan)
    ensure_deployment(context, _reference_auc(plan))  # a changed configuration stops here
    batches = len(plan.stream.batches)
    todo = [n for n in range(1, batches + 1) if not replay_log.committed(context, n)]
    if context.settings.monitoring.label_delay_batches and not replay_log.measured(
        context, batches
    ):
        todo.append(batches + 1)  # the closing window: outcomes still owed
    if max_batches is not None:
        todo = [n for n in todo if n <= max_batches]
    if not todo:
        return totals
    sent = ReplayBatches(context, plan)
    with _traffic(context, plan, service_url) as traffic:
        for number in todo:
            if number <= batches:
                _step(context, sent, traffic, number, totals)
            else:
                _closing_labels(context, sent, traffic)
    return totals


def _start_from(plan: ReplayPlan) -> None:
    """A new run starts from a model that has not seen the stream (made champion if asked)."""
    slot, current = plan.slot, plan.slot.champion_version()
    version = plan.initial_version or current
    require_unseen(slot, version, plan.stream)
    if version != current:
        reason = f"made champion to start the replay {plan.run!r} from a model unseen by it"
        slot.set_champion(version, current, reason)


class ReplayBatches:
    """The stream's batches as the replay sends them: scenarios injected once per batch (the
    same every time: seeded), their ground truth recorded, and stand-in ids for every row."""

    def __init__(self, context: LoopContext, plan: ReplayPlan):
        """Batches of ``plan`` for ``context``'s deployment."""
        self.context, self.plan = context, plan
        self._frames: dict[int, pd.DataFrame] = {}
        self.ids = streams.StandInIds(self.frame)
        self.patients = plan.stream.patient_numbers()

    def frame(self, number: int) -> pd.DataFrame:
        """Batch ``number`` with its scenarios applied."""
        if number not in self._frames:
            frame, injections = inject(
                self.plan.stream.batches[number - 1],
                self.plan.scenarios,
                number,
                self.context.settings.training.seed,
            )
            self._record(number, injections)
            self._frames[number] = frame.reset_index(drop=True)
        return self._frames[number]

    def requests(self, number: int) -> list[dict[str, Any]]:
        """Batch ``number``'s prediction requests, over its window."""
        window = self.context.clock.window(number)
        return streams.requests(self.frame(number), self.ids(number), window, self.patients)

    def outcomes(self, number: int) -> list[dict[str, Any]]:
        """Batch ``number``'s outcomes."""
        return streams.outcomes(self.frame(number), self.ids(number))

    def _record(self, number: int, injections: list[Injection]) -> None:
        table, run = scenario_injections, self.plan.run
        rows = [
            {
                **{k: v for k, v in asdict(injection).items() if k != "batch"},
                "deployment": run,
                "window": number,
                "detail": injection.detail[:1000],
            }
            for injection in injections
        ]
        with self.context.engine.begin() as connection:
            connection.execute(
                delete(table).where(table.c.deployment == run, table.c.window == number)
            )
            if rows:
                connection.execute(insert(table), rows)


def _step(
    context: LoopContext, batches: ReplayBatches, traffic: Traffic, number: int, totals: Served
) -> None:
    started = time.perf_counter()
    settings, window = context.settings, context.clock.window(number)
    replay_log.forget_partial_log(context, window)
    served = traffic.serve(batches.requests(number), settings.serving.max_batch_size)
    replay_log.keep_refused(context, number, batches.frame(number), served)
    labelled = number - settings.monitoring.label_delay_batches
    if labelled >= 1:
        traffic.send_outcomes(batches.outcomes(labelled), 10_000)
    replay_log.wait_logged(context, window, served.accepted + len(served.rejected))
    pending = run_window(context, number)
    totals.requests += served.requests
    totals.accepted += served.accepted
    totals.seconds += served.seconds
    _follow(traffic, pending)
    context.progress(f"{pending.text} ({time.perf_counter() - started:.1f} s)")


def _closing_labels(context: LoopContext, batches: ReplayBatches, traffic: Traffic) -> None:
    """The outcomes still owed, then one more window to measure them (nothing is served)."""
    last = len(batches.plan.stream.batches)
    for number in range(
        max(1, last - context.settings.monitoring.label_delay_batches + 1), last + 1
    ):
        traffic.send_outcomes(batches.outcomes(number), 10_000)
    pending = run_window(context, last + 1)
    context.progress(f"closing: {pending.text}")


def _follow(traffic: Traffic, pending: PendingWindow) -> None:
    if pending.champion_after and pending.champion_after != pending.champion:
        traffic.follow_champion(pending.champion_after)


@contextmanager
def _traffic(context: LoopContext, plan: ReplayPlan, service_url: str | None) -> Iterator[Traffic]:
    salt = load_or_create_salt(context.settings)
    if not plan.through_service:
        yield InProcessTraffic(context.settings, context.engine, plan.run, plan.slot, salt)
        return
    if service_url is not None:
        settings = context.settings
        if settings.serving.api_key is None:
            raise LoopError("--service-url needs HEALTHPREDICT_API_KEY (and the admin key to swap)")
        admin = (
            settings.serving.admin_key.get_secret_value() if settings.serving.admin_key else None
        )
        yield HttpTraffic(service_url, settings.serving.api_key.get_secret_value(), admin)
        return
    from healthpredict.loop.service import service_process

    log = context.settings.data.simulation_dir / plan.run / "service.log"
    with service_process(context.settings, plan.run, log) as service:
        context.progress(f"service for {plan.run!r} on {service.url} (log: {log})")
        yield HttpTraffic(service.url, service.api_key, service.admin_key)


def _reference_auc(plan: ReplayPlan) -> float | None:
    text = plan.slot.tags(plan.slot.champion_version()).get("test_roc_auc")
    try:
        return float(text.split()[0]) if text else None
    except ValueError:
        return None
