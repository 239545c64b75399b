"""checkov on the synthesized templates: every check passes or is skipped inline with a reason.

checkov runs from a venv of its own (``make infra-tools``; infra/checkov.in says why it
is not in requirements/lock.txt). Without it this module skips on a developer's machine
and fails under CI (CI=true), so CI cannot pass by not scanning.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
from infra_support import INFRA_DIR, Synthesized

pytestmark = pytest.mark.infra

# `make infra-test` passes the Makefile's path; this is the same default.
CHECKOV_ENV = "HEALTHPREDICT_CHECKOV"
DEFAULT_CHECKOV = INFRA_DIR.parent / ".venv" / "tools" / "checkov" / "bin" / "checkov"
PIN = re.compile(r"^checkov==(?P<version>\S+)$", re.MULTILINE)
SCAN_TIMEOUT_S = 300


@dataclass(frozen=True)
class Result:
    """One failed or skipped check on one resource of one template variant."""

    variant: str
    check_id: str
    resource: str  # "<Type>.<LogicalId>", as checkov names it
    name: str
    comment: str = ""

    def __str__(self) -> str:
        return f"{self.variant}: {self.check_id} on {self.resource}: {self.name}"


@dataclass(frozen=True)
class Scan:
    """What checkov reported for all variants together."""

    version: str
    passed: int
    failed: list[Result]
    skipped: list[Result]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def _unavailable(reason: str) -> NoReturn:
    """Fail under CI (a scan that silently does not run proves nothing); skip elsewhere."""
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


def _checkov() -> Path:
    path = Path(os.environ.get(CHECKOV_ENV) or DEFAULT_CHECKOV)
    if not os.access(path, os.X_OK):
        _unavailable(f"checkov not found at {path}: run `make infra-tools`")
    return path


def _pinned_version() -> str:
    match = PIN.search((INFRA_DIR / "checkov.in").read_text(encoding="utf-8"))
    assert match, "infra/checkov.in must pin checkov==<version>"
    return match["version"]


def _results(report: dict[str, Any], kind: str) -> list[Result]:
    return [
        Result(
            variant=Path(item["file_path"]).name.split(".")[0],
            check_id=item["check_id"],
            resource=item["resource"],
            name=item["check_name"],
            comment=item["check_result"].get("suppress_comment") or "",
        )
        for item in report["results"].get(kind, [])
    ]


def _run_checkov(checkov: Path, templates: list[Path], workdir: Path) -> Scan:
    """Runs checkov once over every template; its JSON report is read from a file."""
    files = [arg for template in templates for arg in ("-f", str(template))]
    # --skip-download: no call to the vendor's platform; the scan is offline and repeatable.
    command = [str(checkov), "--framework", "cloudformation", "--skip-download", "-o", "json"]
    command += ["--output-file-path", str(workdir), *files]
    done = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=SCAN_TIMEOUT_S, check=False
    )
    report_file = workdir / "results_json.json"
    # Exit status 1 means findings, which the tests list; anything else is checkov failing.
    assert done.returncode in {0, 1} and report_file.is_file(), done.stderr[-3000:]
    report = json.loads(report_file.read_text(encoding="utf-8"))
    assert isinstance(report, dict), f"expected one cloudformation report, got {report!r:.300}"
    return Scan(
        version=report["summary"]["checkov_version"],
        passed=report["summary"]["passed"],
        failed=_results(report, "failed_checks"),
        skipped=_results(report, "skipped_checks"),
    )


def _template_skips(variant: str, stack: Synthesized) -> set[tuple[str, str, str]]:
    """(variant, check id, resource) for every inline suppression in the template."""
    return {
        (variant, skip["id"], f"{resource['Type']}.{logical_id}")
        for logical_id, resource in stack.template["Resources"].items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    }


# Session scope like the templates' fixtures, which pytest would otherwise set up first.
@pytest.fixture(scope="session")
def checkov() -> Path:
    """The executable, looked for before anything is synthesized (a skip should be quick)."""
    return _checkov()


@pytest.fixture(scope="module")
def variants(default: Synthesized, full: Synthesized) -> dict[str, Synthesized]:
    return {"default": default, "full": full}


@pytest.fixture(scope="module")
def scan(
    checkov: Path, variants: dict[str, Synthesized], tmp_path_factory: pytest.TempPathFactory
) -> Scan:
    workdir = tmp_path_factory.mktemp("checkov")
    templates = []
    for variant, stack in variants.items():
        # The file name carries the variant into checkov's report.
        template = workdir / f"{variant}.template.json"
        template.write_text(json.dumps(stack.template, indent=1), encoding="utf-8")
        templates.append(template)
    return _run_checkov(checkov, templates, workdir)


def test_checkov_is_the_pinned_version(scan: Scan) -> None:
    assert scan.version == _pinned_version(), "stale tool venv: run `make infra-tools`"


def test_checkov_finds_nothing(scan: Scan) -> None:
    assert scan.passed > 0, "checkov evaluated no check: did it parse the templates?"
    if scan.failed:
        # pytest.fail rather than assert: the list alone, without pytest's repr of the scan.
        pytest.fail(
            f"checkov: {len(scan.failed)} failed check(s). Fix each in infra/healthpredict_infra, "
            "or skip it there with skip_check(resource, id, reason):\n"
            + "\n".join(f"  {result}" for result in scan.failed),
            pytrace=False,
        )


def test_checkov_honours_every_inline_skip_and_each_has_a_reason(
    scan: Scan, variants: dict[str, Synthesized]
) -> None:
    expected = set().union(*(_template_skips(name, stack) for name, stack in variants.items()))
    reported = {(r.variant, r.check_id, r.resource) for r in scan.skipped}
    assert reported == expected, "checkov's skips differ from the templates' Metadata.checkov"
    blank = [str(r) for r in scan.skipped if not r.comment.strip()]
    assert blank == [], f"skipped without a reason: {blank}"
