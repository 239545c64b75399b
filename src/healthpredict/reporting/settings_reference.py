"""The configuration reference, generated from the Settings class (the README embeds it)."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from healthpredict.settings import Settings

BEGIN_MARKER = "<!-- settings-reference:begin -->"
END_MARKER = "<!-- settings-reference:end -->"


def _default_text(name: str) -> str:
    field = Settings.model_fields[name]
    default = field.default
    if default is PydanticUndefined or default is None:
        return "(unset)"
    if isinstance(default, SecretStr):
        return "(secret)"
    return f"`{default}`"


def settings_reference() -> str:
    """A Markdown table: environment variable, default, meaning, for every setting."""
    prefix = Settings.model_config.get("env_prefix", "")
    rows = ["| environment variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{prefix}{name.upper()}` | {_default_text(name)} | {meaning} |")
    return "\n".join(rows)


def embedded_reference(readme_text: str) -> str:
    """The reference currently embedded between the README's markers."""
    start = readme_text.index(BEGIN_MARKER) + len(BEGIN_MARKER)
    return readme_text[start : readme_text.index(END_MARKER)].strip()
