"""Renders the instance's user data script from ``user_data.sh``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

TEMPLATE = Path(__file__).with_name("user_data.sh")
_PLACEHOLDER = re.compile(r"@@[A-Z_]+@@")


def render_user_data(values: Mapping[str, str], template: Path = TEMPLATE) -> str:
    """Fills the ``@@NAME@@`` placeholders of the bootstrap script.

    Values may be CDK tokens (e.g. the bucket name): CDK turns a string with
    embedded tokens into ``Fn::Join``, so the script stays inline and the
    stack needs no asset bucket.

    Args:
        values: Placeholder name (without the ``@@``) to replacement text.
        template: Script template to render.

    Returns:
        The rendered script.

    Raises:
        KeyError: If the template has a placeholder missing from ``values``.
    """
    script = template.read_text(encoding="utf-8")
    for name, value in values.items():
        script = script.replace(f"@@{name}@@", value)
    leftover = sorted(set(_PLACEHOLDER.findall(script)))
    if leftover:
        raise KeyError(f"user data placeholders without a value: {leftover}")
    return script
