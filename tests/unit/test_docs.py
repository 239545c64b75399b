"""The README stays in sync with the code it documents."""

from __future__ import annotations

import re
from pathlib import Path

from healthpredict.reporting.settings_reference import embedded_reference, settings_reference

ROOT = Path(__file__).resolve().parents[2]


def test_readme_configuration_reference_matches_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    assert embedded_reference(readme) == settings_reference(), (
        "README configuration table is stale: paste `healthpredict config --markdown` between "
        "the settings-reference markers"
    )


def test_relative_links_in_docs_resolve() -> None:
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
