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


def _package_modules() -> set[str]:
    """Top-level modules and subpackages of healthpredict, as ``healthpredict.<name>``."""
    package = ROOT / "src" / "healthpredict"
    # __main__ only starts the command line: it is cli in the diagram.
    names = {p.stem for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")}
    names |= {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    return {f"healthpredict.{name}" for name in names}


def test_architecture_diagram_names_every_module_and_only_real_ones() -> None:
    readme = (ROOT / "README.md").read_text()
    diagram = readme.split("```mermaid", 1)[1].split("```", 1)[0]
    named = set(re.findall(r"healthpredict\.[a-z_]+", diagram))
    modules = _package_modules()
    assert not modules - named, f"modules missing from the diagram: {sorted(modules - named)}"
    unknown = sorted(named - modules)
    assert not unknown, f"the diagram names modules that do not exist: {unknown}"
