"""The monitoring store's schema: what the service logs, what arrives later, what the loop found.

Three kinds of table, all keyed by ``deployment`` (the name of one service's log, e.g.
"production"; a replay or what-if run is a deployment of its own, so none of them mixes with
another's traffic):

- **written by the service**: ``predictions`` (every record served, without identifiers in
  clear, with the time the encounter happened) and ``rejected_records`` (every record refused
  by validation, with the fields at fault, never their values);
- **outcomes**: the 30-day readmission of an encounter, keyed by its hashed id, whenever it
  arrives (``POST /outcomes``, ``healthpredict outcomes load``);
- **written by the loop** (:mod:`healthpredict.loop`), one set of rows per monitoring window:
  the window's verdict, drift per model version and field, realised performance once outcomes
  arrive (and per patient group: ``window_groups``), the policy's decision, the models it
  trained, and the scenarios a replay injected.
  Each window's rows are replaced whole in one transaction, so a window monitored twice has
  its rows once.

:func:`create_schema` creates what is missing and adds the columns this version introduced to a
store written by an earlier one.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    inspect,
    text,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

metadata = MetaData()
DEFAULT_DEPLOYMENT = "production"
_LOCK = 7_342_615_001  # the advisory lock under which PostgreSQL clients create the schema
_NAME = 120  # length of deployment names


def _deployment(primary_key: bool = True) -> Column[str]:
    return Column("deployment", String(_NAME), primary_key=primary_key, nullable=False)


# --- written by the service ------------------------------------------------------------------
predictions = Table(
    "predictions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # Nullable only so that a store from before deployments existed can be upgraded in place.
    Column("deployment", String(_NAME), nullable=True, doc="whose log: the service's setting"),
    Column("request_id", String(64), nullable=False, index=True),
    Column("position", Integer, nullable=False, doc="row index within the request"),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column(
        "occurred_at",
        DateTime(timezone=True),
        nullable=True,
        doc="when the encounter happened (the request's discharge_time, else the request time)",
    ),
    Column("model_name", String(200), nullable=False),
    Column("model_version", String(32), nullable=False, index=True),
    Column("probability", Float, nullable=False),
    Column("risk_band", String(32), nullable=False),
    Column("decision", Boolean, nullable=False),
    Column("features", JSON, nullable=False, doc="the contract feature fields as received"),
    Column("patient_key", String(64), nullable=True, index=True, doc="salted hash of patient_nbr"),
    Column("encounter_key", String(64), nullable=True, doc="salted hash of encounter_id"),
)
# Monitoring reads one deployment's window; outcomes are joined by encounter.
Index("ix_predictions_window", predictions.c.deployment, predictions.c.occurred_at)
Index("ix_predictions_encounter", predictions.c.deployment, predictions.c.encounter_key)

rejected_records = Table(
    "rejected_records",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deployment", String(_NAME), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("position", Integer, nullable=False, doc="index of the record in the request"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("fields", JSON, nullable=False, doc="names of the fields that broke the contract"),
)
Index("ix_rejected_window", rejected_records.c.deployment, rejected_records.c.occurred_at)

# --- outcomes ----------------------------------------------------------------------------------
outcomes = Table(
    "outcomes",
    metadata,
    _deployment(),
    Column("encounter_key", String(64), primary_key=True, doc="salted hash of encounter_id"),
    Column("readmitted_30d", Boolean, nullable=False),
    Column("reported_as", String(16), nullable=False, doc="'<30', '>30', 'NO', 'true', 'false'"),
    Column("source", String(300), nullable=False, doc="'api' or the file it was loaded from"),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

# --- written by the loop, per deployment and window ---------------------------------------------
loop_runs = Table(
    "loop_runs",
    metadata,
    _deployment(),
    Column("policy", String(60), nullable=False),
    Column("policy_config", JSON, nullable=False),
    Column("scenario_set", String(80), nullable=False, doc="'' for live traffic"),
    Column("scenarios", JSON, nullable=True),
    Column("stream", String(20), nullable=False, doc="live | natural | exchangeable"),
    Column("slot", String(20), nullable=False, doc="registry | folder: where versions live"),
    Column("initial_version", String(32), nullable=False),
    Column("reference_auc", Float, nullable=True),
    Column("origin", DateTime(timezone=True), nullable=False, doc="start of window 1"),
    Column("window_seconds", Float, nullable=False),
    Column("fingerprint", String(64), nullable=False, doc="hash of everything that shapes it"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

windows = Table(
    "windows",
    metadata,
    _deployment(),
    Column("window", Integer, primary_key=True, doc="1-based, counted from the origin"),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("window_end", DateTime(timezone=True), nullable=False),
    Column("status", String(20), nullable=False, doc="completed | quarantined"),
    Column("n_predictions", Integer, nullable=False),
    Column("n_rejected", Integer, nullable=False, doc="records the service refused"),
    Column("model_version", String(32), nullable=True, doc="version that served most of it"),
    Column("champion_after", String(32), nullable=False, doc="version serving after it"),
    Column("scenarios", String(400), nullable=False, doc="names a replay injected ('' if none)"),
    Column("quarantine_reason", String(2000), nullable=True),
    Column("alarms", JSON, nullable=False, doc="label-free alarms raised on this window"),
    Column("report_path", String(500), nullable=True),
    Column("monitor_seconds", Float, nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    # Added with the equity monitor (nullable: stores written before it upgrade).
    Column("equity_seconds", Float, nullable=True, doc="of monitor_seconds: the group figures"),
)

window_versions = Table(
    "window_versions",
    metadata,
    _deployment(),
    Column("window", Integer, primary_key=True),
    Column("model_version", String(32), primary_key=True),
    Column("n_predictions", Integer, nullable=False),
    Column("drift_share", Float, nullable=False, doc="split gain in fields off the reference"),
    Column("n_drifted", Integer, nullable=False, doc="fields off the reference"),
    Column("dataset_drift", Boolean, nullable=False, doc="input drift: enough to matter"),
    Column("prediction_drift", Float, nullable=False),
    Column("prediction_drift_detected", Boolean, nullable=False),
    Column("estimated_auc", Float, nullable=False, doc="label-free estimate, recalibrated"),
    Column("baseline_estimated_auc", Float, nullable=False),
    Column("risk_quantiles", JSON, nullable=False, doc="q05 q25 q50 q75 q95 mean"),
    Column("alarms", JSON, nullable=False),
    # Added with the calibrated field monitor (nullable: stores written before it upgrade).
    Column("data_changed", Boolean, nullable=True, doc="a field moved in this window"),
    Column("moved", JSON, nullable=True, doc="the fields that moved, most severe first"),
    Column("estimated_auc_raw", Float, nullable=True, doc="estimate from the risks as served"),
    Column("estimate_basis", String(200), nullable=True, doc="what recalibrated the estimate"),
)

feature_drift = Table(
    "feature_drift",
    metadata,
    _deployment(),
    Column("window", Integer, primary_key=True),
    Column("model_version", String(32), primary_key=True),
    Column("feature", String(80), primary_key=True),
    Column("statistic", Float, nullable=False, doc="distribution statistic: the effect size"),
    Column("threshold", Float, nullable=False, doc="its calibrated threshold"),
    Column("drifted", Boolean, nullable=False, doc="off the reference by any check"),
    Column("weight", Float, nullable=False, doc="share of the model's split gain"),
    # Added with the calibrated field monitor (nullable: stores written before it upgrade).
    Column("method", String(40), nullable=True, doc="jensenshannon | wasserstein"),
    Column("status", String(20), nullable=True, doc="steady | moved | settled | ..."),
    Column("since_window", Integer, nullable=True, doc="window it moved in"),
    Column("previous_statistic", Float, nullable=True, doc="against the previous window"),
    Column("previous_threshold", Float, nullable=True),
    Column("findings", JSON, nullable=True, doc="checks that fired: check, value, limit, detail"),
    Column("counts", JSON, nullable=True, doc="value counts, for the next window's comparison"),
    Column("acknowledgement", JSON, nullable=True, doc="by, reason, at"),
)

drift_acknowledgements = Table(
    "drift_acknowledgements",
    metadata,
    _deployment(),
    Column("feature", String(80), primary_key=True),
    Column("model_version", String(32), primary_key=True),
    Column("since_window", Integer, primary_key=True, doc="the move acknowledged"),
    Column("acknowledged_by", String(120), nullable=False),
    Column("reason", String(1000), nullable=False),
    Column("acknowledged_at", DateTime(timezone=True), nullable=False),
    Column("window", Integer, nullable=False, doc="the latest window when acknowledged"),
)

window_performance = Table(
    "window_performance",
    metadata,
    _deployment(),
    Column("window", Integer, primary_key=True, doc="window whose predictions are measured"),
    Column("model_version", String(32), primary_key=True),
    Column("known_at_window", Integer, nullable=False, doc="window whose run measured it"),
    Column("n_labelled", Integer, nullable=False),
    Column("labelled_share", Float, nullable=False),
    Column("roc_auc", Float, nullable=True),
    Column("roc_auc_low", Float, nullable=True),
    Column("roc_auc_high", Float, nullable=True),
    Column("estimated_auc", Float, nullable=False),
    Column("shortfall_low", Float, nullable=True),
    Column("shortfall_high", Float, nullable=True),
    Column("ece", Float, nullable=False),
    Column("observed_rate", Float, nullable=False),
    Column("predicted_rate", Float, nullable=False),
    Column("calibration_gap_low", Float, nullable=True),
    Column("calibration_gap_high", Float, nullable=True),
    Column("alarms", JSON, nullable=False, doc="label-based alarms about this window"),
    # Added with the recalibrated estimate (nullable: stores written before it upgrade).
    Column("monitored_estimate", Float, nullable=True, doc="the estimate made at monitoring"),
    Column("estimate_error", Float, nullable=True, doc="monitored estimate minus realised"),
    Column("recalibration", JSON, nullable=True, doc="intercept, slope on the logit"),
)


def _interval_columns(name: str, doc: str) -> list[Column[float]]:
    return [
        Column(name, Float, nullable=True, doc=doc),
        Column(f"{name}_low", Float, nullable=True),
        Column(f"{name}_high", Float, nullable=True),
    ]


window_groups = Table(
    "window_groups",
    metadata,
    _deployment(),
    Column("window", Integer, primary_key=True, doc="window whose predictions are measured"),
    Column("model_version", String(32), primary_key=True),
    Column("attribute", String(40), primary_key=True, doc="age | gender | race | ... | all"),
    Column("group_name", String(200), primary_key=True, doc="e.g. [80-100) (pooled bands)"),
    Column("members", JSON, nullable=False, doc="the values the group pools"),
    Column("known_at_window", Integer, nullable=False, doc="window whose run measured it"),
    Column("status", String(20), nullable=False, doc="ok | alarm | too few"),
    Column("n_encounters", Integer, nullable=False),
    Column("n_patients", Integer, nullable=False),
    Column("n_positive", Integer, nullable=False),
    Column("observed_rate", Float, nullable=True),
    Column("predicted_rate", Float, nullable=True),
    *_interval_columns("roc_auc", "realised ROC-AUC within the group"),
    *_interval_columns("auc_vs_all", "its difference from the whole population's"),
    *_interval_columns("calibration_gap", "observed minus mean predicted rate"),
    *_interval_columns("gap_vs_all", "its difference from the whole population's"),
    *_interval_columns("flagged_share", "share flagged at the decision threshold"),
    Column("alarms", JSON, nullable=False, doc="equity alarms about this group"),
)

decisions = Table(
    "decisions",
    metadata,
    _deployment(),
    Column("window", Integer, primary_key=True),
    Column("labelled_window", Integer, nullable=True, doc="window whose labels it acted on"),
    Column("action", String(20), nullable=False, doc="none | retrain | cooldown"),
    Column("reasons", JSON, nullable=False),
    Column("outcome", String(20), nullable=False, doc="'' | promoted | passed | refused | failed"),
    Column("champion_version", String(32), nullable=False),
    Column("challenger_version", String(32), nullable=True),
    Column("gate", JSON, nullable=True),
    Column("error", String(2000), nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=False),
)

loop_models = Table(
    "loop_models",
    metadata,
    _deployment(),
    Column("version", String(32), primary_key=True),
    Column("trained_at_window", Integer, nullable=False, doc="0 = the initial champion"),
    Column("training_rows", Integer, nullable=False),
    Column("training_data", String(400), nullable=False),
    Column("baseline_estimated_auc", Float, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

scenario_injections = Table(
    "scenario_injections",
    metadata,
    _deployment(),
    Column("window", Integer, primary_key=True),
    Column("scenario", String(80), primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("rows_changed", Integer, nullable=False),
    Column("labels_changed", Integer, nullable=False),
    Column("prevalence_before", Float, nullable=False),
    Column("prevalence_after", Float, nullable=False),
    Column("detail", String(1000), nullable=False),
)

pending_windows = Table(
    "pending_windows",
    metadata,
    _deployment(),
    Column("window", Integer, primary_key=True),
    Column("phase", String(20), nullable=False),
    Column("record", JSON, nullable=False, doc="what the phases found so far"),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# The rows of one window, replaced together by the loop's commit.
WINDOW_TABLES = (windows, window_versions, feature_drift, decisions)
# Everything a deployment owns, deleted by a replay's restart.
DEPLOYMENT_TABLES = (
    predictions,
    rejected_records,
    outcomes,
    loop_runs,
    windows,
    window_versions,
    feature_drift,
    window_performance,
    window_groups,
    decisions,
    drift_acknowledgements,
    loop_models,
    scenario_injections,
    pending_windows,
)


def create_schema(engine: Engine) -> None:
    """Create every table that does not exist yet; upgrade a ``predictions`` table from before
    deployments and encounter times (its rows become the default deployment's, at the time
    they were served), and add the nullable columns later versions gave the loop's tables.

    Safe when several processes do it at once on a new database (the service's log writer, a
    monitor run, an outcome load): on PostgreSQL they take turns under an advisory lock, and on
    SQLite a table created meanwhile by another process is simply found on a second look.
    """
    for attempt in range(2):
        try:
            with engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
                metadata.create_all(connection)
                _upgrade_predictions(connection)
                for table in UPGRADED_TABLES:
                    _add_missing_columns(connection, table)
            return
        except (IntegrityError, OperationalError, ProgrammingError):
            if attempt:
                raise


# Tables that gained nullable columns since their first version: added in place on upgrade.
UPGRADED_TABLES = (windows, window_versions, feature_drift, window_performance)


def _add_missing_columns(connection: Connection, table: Table) -> None:
    present = {column["name"] for column in inspect(connection).get_columns(table.name)}
    for column in table.columns:
        if column.name not in present and column.nullable:
            kind = column.type.compile(dialect=connection.dialect)
            connection.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


def _upgrade_predictions(connection: Connection) -> None:
    present = {column["name"] for column in inspect(connection).get_columns("predictions")}
    missing = [name for name in ("deployment", "occurred_at") if name not in present]
    if not missing:
        return
    timestamp = str(predictions.c.created_at.type.compile(dialect=connection.dialect))
    types = {"deployment": f"VARCHAR({_NAME})", "occurred_at": timestamp}
    for name in missing:
        connection.execute(text(f"ALTER TABLE predictions ADD COLUMN {name} {types[name]}"))
    connection.execute(
        text(
            "UPDATE predictions SET deployment = COALESCE(deployment, :name), "
            "occurred_at = COALESCE(occurred_at, created_at)"
        ),
        {"name": DEFAULT_DEPLOYMENT},
    )
    for index in predictions.indexes:  # create_all skips the indexes of an existing table
        index.create(connection, checkfirst=True)
