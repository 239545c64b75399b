"""How a replay is assembled: policy and scenarios from their files, the stream, the model slot.

The main run (``healthpredict simulate``, the main job) is a deployment of its own: the real
service, the registry, the champion alias. What-if runs replay the same stream under another
policy in process, with versions in a folder seeded from a registered version; the
exchangeable control seeds its folder with a model trained here on the control's reference
half. Every start goes through the time-travel check,
:func:`~healthpredict.loop.streams.require_unseen`.
"""

from __future__ import annotations

from typing import Literal

from healthpredict.data.pseudonym import SEQUENCE
from healthpredict.data.timeline import load_manifest
from healthpredict.loop.folder import FolderSlot
from healthpredict.loop.models import ModelSlot, NewModel, RegistrySlot
from healthpredict.loop.replay import ReplayPlan
from healthpredict.loop.streams import Stream, exchangeable_stream, natural_stream, require_unseen
from healthpredict.modeling.train import ModelKind, default_params, features_of, fit_model
from healthpredict.monitoring.policy import load_policies, select_policy
from healthpredict.monitoring.scenarios import ScenarioSet, load_scenarios
from healthpredict.pipelines.profile import build as build_profile
from healthpredict.settings import Settings

StreamKind = Literal["natural", "exchangeable"]
WHAT_IF_SUFFIX = "-what-if"


def default_run_name(scenario_set: str, policy: str, stream: StreamKind, what_if: bool) -> str:
    """``<scenario set>-<policy>``, marked as control or what-if where it applies."""
    prefix = "control" if stream == "exchangeable" else scenario_set
    return f"{prefix}-{policy}" + (WHAT_IF_SUFFIX if what_if else "")


def build_plan(
    settings: Settings,
    policy_name: str,
    run: str | None = None,
    stream_kind: StreamKind = "natural",
    what_if: bool = False,
    scenarios: ScenarioSet | None = None,
    exchangeable_batches: int = 20,
    initial_version: str | None = None,
) -> ReplayPlan:
    """Assemble a replay (see the module docstring).

    Args:
        settings: Settings in force.
        policy_name: The retraining policy, by name.
        run: The run's name; default from the scenario set and the policy.
        stream_kind: The natural time order or the exchangeable control.
        what_if: Replay in process with versions in a folder, leaving the registry alone.
        scenarios: Instead of the configured scenario file.
        exchangeable_batches: Batches of the exchangeable control.
        initial_version: Start from this registered version (a new main run makes it
            champion; a run that exists goes on from where it is).

    Raises:
        LoopError: The starting model has seen the stream (the message names another).
        PolicyError, ScenarioError, SlotError, TimelineError: What the message says.
    """
    policy = select_policy(load_policies(settings.monitoring.policies_file), policy_name)
    scenario_set = scenarios or load_scenarios(settings.monitoring.scenarios_file)
    stream = _stream(settings, stream_kind, exchangeable_batches)
    name = run or default_run_name(scenario_set.name, policy_name, stream_kind, what_if)
    main = stream_kind == "natural" and not what_if
    slot: ModelSlot
    if main:
        slot = RegistrySlot(settings)
    else:
        slot = _seeded_folder(settings, name, stream, initial_version)
    return ReplayPlan(name, policy_name, policy, scenario_set, stream, slot, main, initial_version)


def _stream(settings: Settings, kind: StreamKind, exchangeable_batches: int) -> Stream:
    if kind == "natural":
        return natural_stream(settings)
    manifest = load_manifest(settings.data.prepared_dir)
    batch_rows = manifest.window(manifest.batch_names[0]).rows
    return exchangeable_stream(settings, exchangeable_batches, batch_rows)


def _seeded_folder(
    settings: Settings, run: str, stream: Stream, initial_version: str | None
) -> FolderSlot:
    """A what-if run's folder, its first champion copied from the registry or fitted here."""
    slot = FolderSlot(
        settings.data.simulation_dir / run / "models",
        settings.tracking.model_name,
        settings.compiled_trees_dir,
    )
    if slot.has_champion():
        return slot
    if stream.kind == "exchangeable":
        slot.seed(fitted_seed(settings, stream))
        return slot
    registry = RegistrySlot(settings)
    version = initial_version or registry.champion_version()
    require_unseen(registry, version, stream)
    loaded = registry.load(version)
    tags = {**registry.tags(version), "copied_from": f"{settings.tracking.model_name} v{version}"}
    example = features_of(stream.reference).head(5)
    slot.seed(
        NewModel(
            loaded.pipeline, registry.params(version), example, tags, registry.profile(version)
        )
    )
    return slot


def fitted_seed(settings: Settings, stream: Stream) -> NewModel:
    """A model trained on the stream's reference with the packaged defaults, its profile's
    baseline on the first batch."""
    params = default_params()
    fitted = fit_model(
        ModelKind.LIGHTGBM,
        stream.reference,
        params,
        settings.training.cv_folds,
        settings.training.seed,
    )
    profile = build_profile(
        fitted.pipeline, stream.reference, stream.batches[0], settings.monitoring
    )
    sequences = stream.reference[SEQUENCE]
    tags = {"training_window": f"sequence {int(sequences.min())}-{int(sequences.max())}"}
    return NewModel(fitted.pipeline, params, features_of(stream.reference).head(5), tags, profile)
