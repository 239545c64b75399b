"""The part of Compose's variable interpolation the compose file uses (not a test module).

No Docker engine or Compose CLI runs here, so the tests interpolate the parsed file
themselves: ``$$`` (a literal ``$``), ``$NAME``, ``${NAME}``, and ``${NAME<op>arg}`` with the
operators ``:-`` ``-`` ``:?`` ``?`` ``:+`` ``+``, as the Compose specification defines them.
Nested references inside ``arg`` are not supported and are reported as an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"\$(?:(?P<escape>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_]\w*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


class MissingVariableError(ValueError):
    """A ``${NAME:?message}`` (or ``?``) reference met an unset or empty variable."""


@dataclass(frozen=True)
class Reference:
    """One variable reference: ``${name<op>arg}``; ``op`` is empty for a plain reference."""

    name: str
    op: str
    arg: str


def references(text: str) -> Iterator[Reference]:
    """Every variable reference in ``text`` (escaped ``$$`` excluded)."""
    for match in _TOKEN.finditer(text):
        if match["escape"]:
            continue
        if match["named"]:
            yield Reference(match["named"], "", "")
            continue
        braced = _BRACED.fullmatch(match["braced"])
        if braced is None or "${" in (braced["arg"] or ""):
            raise ValueError(f"unsupported interpolation: ${{{match['braced']}}}")
        yield Reference(braced["name"], braced["op"] or "", braced["arg"] or "")


def _resolve(ref: Reference, env: Mapping[str, str]) -> str:
    value = env.get(ref.name)
    # With a colon, empty counts as unset (Compose: "unset or empty").
    present = bool(value) if ref.op.startswith(":") else value is not None
    kind = ref.op[-1:] if ref.op else ""
    if kind == "-":
        return value if present and value is not None else ref.arg
    if kind == "?":
        if not present or value is None:
            raise MissingVariableError(f"{ref.name}: {ref.arg or 'required'}")
        return value
    if kind == "+":
        return ref.arg if present else ""
    return value or ""


def interpolate_text(text: str, env: Mapping[str, str]) -> str:
    """``text`` with every reference replaced, as Compose does for one string value."""

    def replace(match: re.Match[str]) -> str:
        if match["escape"]:
            return "$"
        (ref,) = references(match[0])
        return _resolve(ref, env)

    return _TOKEN.sub(replace, text)


def interpolate(document: Any, env: Mapping[str, str]) -> Any:
    """A copy of a parsed compose document with every string value interpolated.

    Mapping keys are left alone, as in Compose.
    """
    if isinstance(document, dict):
        return {key: interpolate(value, env) for key, value in document.items()}
    if isinstance(document, list):
        return [interpolate(item, env) for item in document]
    if isinstance(document, str):
        return interpolate_text(document, env)
    return document


def all_references(document: Any) -> list[Reference]:
    """Every reference in every string value of a parsed document, in order."""
    if isinstance(document, dict):
        return [ref for value in document.values() for ref in all_references(value)]
    if isinstance(document, list):
        return [ref for item in document for ref in all_references(item)]
    if isinstance(document, str):
        return list(references(document))
    return []


def read_dotenv(text: str) -> dict[str, str]:
    """``NAME=value`` lines of a .env file (comments and blank lines skipped, no quoting)."""
    values = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"not a NAME=value line: {line!r}")
            values[name.strip()] = value.strip()
    return values
