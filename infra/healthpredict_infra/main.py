"""Builds the CDK app from settings; the entry point behind ``infra/app.py``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aws_cdk as cdk

from healthpredict_infra.config import ConfigError, InfraConfig, Settings, file_context
from healthpredict_infra.stack import HealthPredictStack


def build_app(
    context: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    outdir: str | None = None,
) -> tuple[cdk.App, HealthPredictStack]:
    """Creates the app and its one stack.

    Args:
        context: CDK context; defaults to ``cdk.json``'s. Context given by the
            CDK CLI (``-c``) still takes precedence.
        environ: Environment for ``HEALTHPREDICT_INFRA_*`` overrides; defaults
            to ``os.environ``.
        outdir: Cloud assembly directory; defaults to ``$CDK_OUTDIR`` or a temp dir.

    Returns:
        The app and the stack.

    Raises:
        ConfigError: If a setting is missing or invalid.
    """
    app = cdk.App(context=dict(file_context() if context is None else context), outdir=outdir)
    config = InfraConfig.from_settings(Settings(app.node.try_get_context, environ))
    if config.account and config.availability_zones:
        # Pre-seeded so synthesis for a known account needs no AZ look-up.
        key = f"availability-zones:account={config.account}:region={config.region}"
        app.node.set_context(key, list(config.availability_zones))
    stack = HealthPredictStack(app, config.stack_name, config=config)
    return app, stack


def main() -> int:
    """Synthesizes the app; prints configuration errors instead of a traceback."""
    try:
        app, stack = build_app()
    except ConfigError as err:
        print(f"healthpredict-infra: configuration error: {err}", file=sys.stderr)
        return 2
    assembly = app.synth()
    manifest = json.loads((Path(assembly.directory) / "manifest.json").read_text())
    missing = manifest.get("missing", [])
    if missing and "CDK_CONTEXT_JSON" not in os.environ:
        # Outside the CLI nobody fills these in; CDK would silently use dummy values.
        keys = ", ".join(item["key"] for item in missing)
        print(
            f"healthpredict-infra: context needs a look-up ({keys}); set availability_zones "
            "or deploy with the CDK CLI",
            file=sys.stderr,
        )
        return 2
    template = Path(assembly.directory) / stack.template_file
    print(
        f"healthpredict-infra: synthesized {stack.stack_name} -> {template}",
        file=sys.stderr,
    )
    return 0
