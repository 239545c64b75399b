"""One self-contained interactive HTML dashboard of simulation runs (plotly.js inlined).

The page carries everything it needs, so it opens from ``file://``, an artefact store or a
mail attachment with no network. Text read from the store (scenario names, reasons) is
escaped before it reaches HTML or a plotly label: plotly renders a subset of HTML tags.
This module assembles the page (header, cards, tables, one section per chart) and writes it;
the charts, their headings and notes come from :data:`healthpredict.reporting.charts.CHARTS`
(the PNG report exports the same figures), the data views from
:mod:`healthpredict.reporting.timeline_views`.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Hashable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from healthpredict.monitoring.history import RunHistory
from healthpredict.reporting.charts import CHARTS, Chart
from healthpredict.reporting.timeline_views import (
    describe_policy,
    escape,
    find_run,
    first_onset,
    summarise_run,
    text_of,
    version_label,
)

CHART_IDS = tuple(chart.id for chart in CHARTS)
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


def write_dashboard(runs: Sequence[RunHistory], main_run: str, path: Path) -> Path:
    """Write the dashboard of ``main_run``, with every run in ``runs`` in the comparison.

    Written to a temporary file beside ``path`` and renamed, so a reader never sees half a
    page.

    Args:
        runs: Runs of the same batches under different policies (the main run among them).
        main_run: Name of the run the timeline charts and the table show.
        path: HTML file to write; its folder is created.

    Returns:
        ``path``.

    Raises:
        ValueError: No run called ``main_run`` in ``runs``.
    """
    run = find_run(runs, main_run)
    page = _page(run, list(runs), generated=datetime.now(UTC))
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(page)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a report is for reading
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


TABLE_HEADER = (
    "batch",
    "scenarios",
    "status",
    "model version",
    "data changed (fields moved)",
    "input drift (gain off ref.)",
    "estimated AUC",
    "realised AUC [interval]",
    "estimate error",
    "group alarms",
    "decision",
    "outcome",
    "quarantine reason",
)
CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --warn: #b42318; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #f5f7fa; }
header { background: #102a43; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 6px; font-size: 22px; font-weight: 600; }
header dl { display: flex; flex-wrap: wrap; gap: 4px 28px; margin: 0; color: #bcccdc; }
header dd { display: inline; margin: 0 0 0 6px; color: #fff; }
header dt { display: inline; }
main { max-width: 1280px; margin: 0 auto; padding: 20px 32px 40px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
          padding: 16px 20px; margin-bottom: 20px; }
h2 { font-size: 17px; margin: 0 0 4px; }
p.note { margin: 0 0 8px; color: var(--muted); max-width: 70em; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px;
         margin-bottom: 20px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; }
.card .value { font-size: 22px; font-weight: 600; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
               letter-spacing: .04em; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: left;
         vertical-align: top; }
th { background: #f0f4f8; font-size: 12px; font-weight: 600; }
td.num { text-align: right; white-space: nowrap; }
tr.quarantined td { background: #fef3f2; }
tr.main td { font-weight: 600; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
         font-weight: 600; }
.badge.completed { background: #e3f8e8; color: #1e6b34; }
.badge.quarantined { background: #fee4e2; color: var(--warn); }
.reason { color: var(--warn); font-weight: 600; }
"""


def _page(run: RunHistory, runs: list[RunHistory], generated: datetime) -> str:
    sections = [_section(chart, run, runs) for chart in CHARTS]
    table = (
        '<section id="batches"><h2>Windows</h2><p class="note">One row per monitoring window '
        "of this deployment's prediction log (a replay's window n is its batch n); a quarantined "
        "window is not monitored and carries the reason.</p>"
        f"{_batch_table(run.batches)}</section>"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Health Predict: {escape(run.name)}</title><style>{CSS}</style>"
        # Inlined, so the page needs no network and works from file://.
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"{_header(run, generated)}<main>{_cards(run)}{sections[0]}{table}"
        f"{''.join(sections[1:])}</main></body></html>\n"
    )


def _section(chart: Chart, run: RunHistory, runs: list[RunHistory]) -> str:
    figure = chart.draw(run, runs)
    html = pio.to_html(
        figure,
        include_plotlyjs=False,
        full_html=False,
        div_id=chart.id,
        config=PLOTLY_CONFIG,
        default_height=f"{figure.layout.height}px",
    )
    extra = _policy_table(runs, run) if chart.id == "chart-policies" else ""
    return (
        f'<section><h2>{escape(chart.heading)}</h2><p class="note">{escape(chart.note)}</p>'
        f"{html}{extra}</section>"
    )


def _header(run: RunHistory, generated: datetime) -> str:
    facts = {
        "policy": describe_policy(run),
        "scenario set": run.scenario_set,
        "stream": run.stream,
        "batches": str(len(run.batches)),
        "generated": generated.strftime("%Y-%m-%d %H:%M UTC"),
    }
    items = "".join(
        f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in facts.items()
    )
    return f"<header><h1>Health Predict: run {escape(run.name)}</h1><dl>{items}</dl></header>"


def _cards(run: RunHistory) -> str:
    summary, batches = summarise_run(run), run.batches
    cards = {
        "batches scored": f"{(batches['status'] == 'completed').sum()} / {len(batches)}",
        "quarantined": str(summary.quarantined),
        "alarms": str(int(batches["alarm"].eq(True).sum())),
        "retrains": str(summary.retrains),
        "promotions": str(summary.promotions),
        "mean realised AUC": _number(summary.mean_auc),
        "serving now": _serving(batches),
    }
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="label">{escape(label)}</div>'
            f'<div class="value">{escape(value)}</div></div>'
            for label, value in cards.items()
        )
        + "</div>"
    )


def _serving(batches: pd.DataFrame) -> str:
    """The version serving after the last batch: the last one seen, or the last promoted."""
    current: object = None
    for row in batches.to_dict("records"):
        current = row["model_version"] if version_label(row["model_version"]) != "-" else current
        current = row["new_version"] if text_of(row["outcome"]) == "promoted" else current
    return version_label(current)


def _batch_table(batches: pd.DataFrame) -> str:
    head = "".join(f"<th>{escape(name)}</th>" for name in TABLE_HEADER)
    body = "".join(_batch_row(row) for row in batches.to_dict("records"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _batch_row(row: dict[Hashable, Any]) -> str:
    status = str(row["status"])
    quarantined = status == "quarantined"
    realised = _number(row["realised_auc"])
    if realised != "-":
        realised += f" [{_number(row['realised_auc_low'])}, {_number(row['realised_auc_high'])}]"
    elif not quarantined:
        realised = "labels pending"
    outcome = text_of(row["outcome"])
    if outcome and version_label(row["new_version"]) != "-":
        outcome += f" ({version_label(row['new_version'])})"
    share = row["drift_share"]
    changed = "-" if quarantined else (text_of(row["moved"]) or "no")
    inputs = "-" if _missing(share) else f"{float(share):.0%}"
    if row["dataset_drift"] is True:
        inputs = f"yes ({inputs})"
    cells = [
        (str(row["batch"]), "num"),
        (text_of(row["scenarios"]) or "-", ""),
        (f'<span class="badge {escape(status)}">{escape(status)}</span>', "html"),
        (version_label(row["model_version"]), ""),
        (changed, "reason"),
        (inputs, "num"),
        (_number(row["estimated_auc"]), "num"),
        (realised, "num"),
        ("-" if _missing(row["estimate_error"]) else f"{float(row['estimate_error']):+.3f}", "num"),
        (text_of(row["group_alarms"]) or "-", "reason"),
        (str(row["decision"]), ""),
        (outcome or "-", ""),
        (text_of(row["quarantine_reason"]) if quarantined else "", "reason"),
    ]
    tds = "".join(
        f"<td>{text}</td>" if kind == "html" else f'<td class="{kind}">{escape(text)}</td>'
        for text, kind in cells
    )
    reasons = text_of(row["alarm_reasons"])
    title = f' title="alarms: {escape(reasons)}"' if reasons else ""
    return f'<tr class="{escape(status)}"{title}>{tds}</tr>'


def _policy_table(runs: list[RunHistory], main: RunHistory) -> str:
    onset = first_onset(main.batches)
    after = (
        f"mean realised AUC from batch {onset}"
        if onset is not None
        else "from first scenario (none)"
    )
    header = ("run", "policy", "mean realised AUC", after, "retrains", "promotions", "quarantined")
    head = "".join(f"<th>{escape(name)}</th>" for name in header)
    rows = []
    for run in runs:
        summary = summarise_run(run)
        cells = [
            escape(summary.name),
            escape(describe_policy(run)),
            _number(summary.mean_auc),
            _number(summary.mean_auc_after_onset),
            str(summary.retrains),
            str(summary.promotions),
            str(summary.quarantined),
        ]
        css = ' class="main"' if run.name == main.name else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value: Any) -> str:
    return "-" if _missing(value) else f"{float(value):.3f}"
