"""The layers of docs/architecture.md hold: no package imports one above it or beside it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "healthpredict"
PAGE = ROOT / "docs" / "architecture.md"
# (importing module, imported module): the page names each and says why.
EXCEPTIONS = {("healthpredict.settings.monitoring", "healthpredict.modeling.groups")}


def layers() -> dict[str, int]:
    """Top-level package or module -> its layer (0 at the bottom), read from the page."""
    block = PAGE.read_text().split("<!-- layers:begin -->", 1)[1].split("<!-- layers:end -->")[0]
    # A row names its packages in the first column; an indented line continues the row above.
    rows = [line for line in block.splitlines() if line[:1].isalpha()]
    ranks: dict[str, int] = {}
    for rank, row in enumerate(reversed(rows)):
        names = re.split(r"\s{2,}", row.strip(), maxsplit=1)[0]
        ranks |= {name.strip(): rank for name in names.split(",")}
    return ranks


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path) -> set[str]:
    """Every healthpredict module ``path`` imports at run time (function-level included;
    what is imported under ``if TYPE_CHECKING:`` only names types)."""
    tree = ast.parse(path.read_text())
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for statement in block.body
        for node in ast.walk(statement)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            # ``from healthpredict.loop import outcomes`` imports the module loop.outcomes.
            found |= {
                f"{node.module}.{a.name}" for a in node.names if _is_module(node.module, a.name)
            }
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("healthpredict.")}


def _is_module(package: str, name: str) -> bool:
    folder = PACKAGE.parent.joinpath(*package.split("."), name)
    return folder.with_suffix(".py").is_file() or (folder / "__init__.py").is_file()


def _top(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_every_package_has_a_layer() -> None:
    ranks = layers()
    tops = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()
    }
    missing = sorted(tops - set(ranks) - {"__init__", "__main__"})
    assert not missing, f"docs/architecture.md gives no layer to: {missing}"
    assert not set(ranks) - tops, f"the page names no such package: {set(ranks) - tops}"


def test_no_package_imports_upwards_or_sideways() -> None:
    ranks = layers()
    broken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        here = _top(module)
        if here in ("", "__main__"):
            continue
        for imported in _runtime_imports(path):
            there = _top(imported)
            if there not in ranks or there == here or (module, imported) in EXCEPTIONS:
                continue
            if ranks[there] >= ranks[here]:
                broken.append(f"{module} imports {imported} ({there} is not below {here})")
    assert not broken, "imports against docs/architecture.md:\n" + "\n".join(sorted(set(broken)))


def test_the_exceptions_are_still_needed() -> None:
    used = {
        (module, imported)
        for path in PACKAGE.rglob("*.py")
        for module in [_module_name(path)]
        for imported in _runtime_imports(path)
    }
    assert used >= EXCEPTIONS, f"exceptions no longer used: {EXCEPTIONS - used}"
