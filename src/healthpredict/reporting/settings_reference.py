"""The configuration reference, generated from the Settings sections (the README embeds it)."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from healthpredict.settings import Settings

BEGIN_MARKER = "<!-- settings-reference:begin -->"
END_MARKER = "<!-- settings-reference:end -->"


def _default_text(info: FieldInfo) -> str:
    default = info.default
    if default is PydanticUndefined or default is None:
        return "(unset)"
    if isinstance(default, SecretStr):
        return "(secret)"
    return f"`{default}`"


def settings_reference() -> str:
    """A Markdown table: environment variable, section, default, meaning, for every setting."""
    rows = [
        "| environment variable | section | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for field in Settings.flat_fields().values():
        meaning = (field.info.description or "").replace("|", "\\|")
        default = _default_text(field.info)
        rows.append(f"| `{field.env}` | {field.section} | {default} | {meaning} |")
    return "\n".join(rows)


def embedded_reference(readme_text: str) -> str:
    """The reference currently embedded between the README's markers."""
    start = readme_text.index(BEGIN_MARKER) + len(BEGIN_MARKER)
    return readme_text[start : readme_text.index(END_MARKER)].strip()
