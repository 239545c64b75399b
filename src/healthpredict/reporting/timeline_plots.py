"""The report's charts as PNG files (for the README, a report, a PR): static exports of the
very figures the dashboard shows (:data:`healthpredict.reporting.charts.CHARTS`), so a PNG and
the interactive page never disagree.

kaleido renders the figures in a headless Chrome or Chromium, with the plotly.js that plotly
ships (no network). It is called through its own API, not ``figure.write_image``: evidently
0.7 holds plotly below 6, and plotly 5's ``write_image`` only knows kaleido 0.2.

The browser is the one ``BROWSER_PATH`` names (the variable kaleido's browser driver,
choreographer, reads) or else the first Chrome or Chromium found on ``PATH`` or in the usual
places (Debian's ``/usr/bin/chromium``), or one ``kaleido_get_chrome`` downloaded. Where there
is none, the PNGs are skipped with one warning line: the dashboard has the same charts.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go

from healthpredict.errors import HealthPredictError
from healthpredict.monitoring.history import RunHistory
from healthpredict.reporting.charts import CHARTS, Chart
from healthpredict.reporting.timeline_views import escape, find_run

logger = logging.getLogger(__name__)

BROWSER_VARIABLE = "BROWSER_PATH"
PNG_WIDTH = 1100  # pixels before scaling: the width of the dashboard's main column
PNG_SCALE = 1.5  # sharper text on high-density screens, at about twice the file size
RENDER_TIMEOUT_S = 60  # per figure; a few hundred milliseconds is usual
NO_BROWSER = (
    "PNG plots skipped: no Chrome or Chromium found (install Debian's package chromium, or "
    f"set {BROWSER_VARIABLE} to a Chrome binary); the dashboard has the same charts"
)


class PngExportError(HealthPredictError):
    """The PNGs could not be written: kaleido is missing, or the browser is missing or broken."""


def write_report_pngs(runs: Sequence[RunHistory], main_run: str, folder: Path) -> list[Path]:
    """Write one PNG per chart of :data:`~healthpredict.reporting.charts.CHARTS`, in page order
    (AUC timeline, drift heatmap, risk distribution, policy comparison).

    Args:
        runs: Runs of the same batches under different policies (the main run among them).
        main_run: Name of the run the timeline charts show.
        folder: Where the files go (created).

    Returns:
        The paths written; none, after one warning, where no browser is found.

    Raises:
        ValueError: No run called ``main_run`` in ``runs``.
        PngExportError: ``BROWSER_PATH`` names no executable file, kaleido is not installed,
            or the browser did not start.
    """
    run = find_run(runs, main_run)
    browser = find_browser()
    if browser is None:
        logger.warning(NO_BROWSER)
        return []
    folder.mkdir(parents=True, exist_ok=True)
    figures = {folder / f"{chart.png}.png": _titled(chart, run, list(runs)) for chart in CHARTS}
    _export(figures, browser)
    return list(figures)


def find_browser() -> str | None:
    """The Chrome or Chromium kaleido will drive, or None when there is none.

    Raises:
        PngExportError: ``BROWSER_PATH`` is set but names no executable file.
    """
    if named := os.environ.get(BROWSER_VARIABLE):
        if not (os.path.isfile(named) and os.access(named, os.X_OK)):
            raise PngExportError(
                f"{BROWSER_VARIABLE}={named!r} is not an executable file: point it at a Chrome "
                "or Chromium binary, or unset it to use the one on PATH"
            )
        return named
    try:
        from choreographer.browsers.chromium import Chromium
    except ImportError as error:  # a virtualenv from before kaleido joined the extra
        raise PngExportError(
            "PNG export needs kaleido (extra 'monitoring'): run `make install`"
        ) from error
    return Chromium.find_browser(skip_local=False)


def _titled(chart: Chart, run: RunHistory, runs: list[RunHistory]) -> go.Figure:
    """The chart's figure with the page's heading as its title: a PNG travels without the
    page around it."""
    figure = chart.draw(run, runs)
    title = f"{escape(chart.heading)}, run {escape(run.name)}"
    figure.update_layout(title={"text": title, "x": 0.01, "xanchor": "left"}, margin_t=70)
    return figure


def _export(figures: dict[Path, go.Figure], browser: str) -> None:
    """Render every figure in one browser session (starting it costs about a second)."""
    with warnings.catch_warnings():
        # kaleido warns on import that plotly 5's write_image cannot use it; its own API,
        # the one called here, renders plotly 5 figures (kaleido's warning says so too).
        warnings.filterwarnings("ignore", "(?s).*not compatible with this version of Kaleido")
        import kaleido
    from choreographer.errors import BrowserClosedError, BrowserDepsError, BrowserFailedError

    options = {"format": "png", "width": PNG_WIDTH, "scale": PNG_SCALE}
    specs = [
        {
            "fig": figure.to_dict(),
            "path": str(path),
            "opts": options | {"height": figure.layout.height},
        }
        for path, figure in figures.items()
    ]
    # mathjax off: the charts use no LaTeX, and its default is a script from the network.
    browser_options = {"path": browser, "mathjax": False, "timeout": RENDER_TIMEOUT_S}
    # cancel_on_error: kaleido otherwise returns its errors instead of raising them.
    try:
        kaleido.write_fig_from_object_sync(specs, kopts=browser_options, cancel_on_error=True)
    except (BrowserFailedError, BrowserDepsError, BrowserClosedError) as error:
        raise PngExportError(
            f"{browser} did not render the PNGs ({type(error).__name__}): point "
            f"{BROWSER_VARIABLE} at a working Chrome or Chromium"
        ) from error
