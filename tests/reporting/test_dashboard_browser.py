"""The dashboard in a real headless browser: Debian's Chromium driven by Playwright.

Playwright never downloads a browser here: it launches /usr/bin/chromium (``.ci/run``
installs the Debian package where it is missing). Without it the test skips on a laptop and
fails in CI (CI=true), so a CI machine cannot pass by not looking.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Page, sync_playwright

from healthpredict.monitoring.history import RunHistory
from healthpredict.reporting.browser import CHROMIUM, CHROMIUM_ARGS
from healthpredict.reporting.dashboard import CHART_IDS, write_dashboard
from tests.reporting.histories import QUARANTINE_REASON
from tests.reporting.system_tools import require


def _require_chromium() -> None:
    require(
        CHROMIUM.exists(),
        f"{CHROMIUM} not installed (Debian package chromium; .ci/run installs it)",
    )


@pytest.mark.timeout(60)
def test_dashboard_renders_in_chromium(runs: list[RunHistory], tmp_path: Path) -> None:
    _require_chromium()
    page_path = write_dashboard(runs, "default-drift", tmp_path / "dashboard.html")
    screenshot = tmp_path / "dashboard.png"
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.on("console", lambda message: _keep_errors(message, problems))
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(page_path.as_uri(), wait_until="load")
            rendered = _rendered_charts(page)
            rows = page.locator("#batches tbody tr").all_inner_texts()
            reason_visible = page.get_by_text(QUARANTINE_REASON).first.is_visible()
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    seen = f"(screenshot: {screenshot})"
    assert not problems, f"console or page errors {seen}: {problems}"
    assert rendered == dict.fromkeys(CHART_IDS, True), f"charts not rendered {seen}: {rendered}"
    assert [row.split()[0] for row in rows] == [str(b) for b in range(1, 8)], f"table {seen}"
    assert reason_visible, f"quarantine reason not visible {seen}"
    offline = [url for url in requests if not url.startswith(("file:", "data:", "blob:"))]
    assert not offline, f"the page asked the network for {offline} {seen}"


def _keep_errors(message: ConsoleMessage, problems: list[str]) -> None:
    if message.type in {"error", "assert"}:
        problems.append(f"console {message.type}: {message.text}")


def _rendered_charts(page: Page) -> dict[str, bool]:
    """Per chart container: plotly took it over and drew its SVG."""
    page.wait_for_function(
        "ids => ids.every(id => document.querySelector(`#${id} .main-svg`))",
        arg=list(CHART_IDS),
        timeout=15_000,
    )
    return {
        chart_id: page.locator(f"#{chart_id}.js-plotly-plot .main-svg").count() > 0
        for chart_id in CHART_IDS
    }
