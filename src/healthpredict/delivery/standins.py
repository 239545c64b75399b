"""Stand-ins for upstream base images a machine cannot pull, built from Debian's packages.

Where no registry answers (the machines this project is built on), the project's Dockerfiles
are built on these instead of their upstream bases, and the compose stack runs the stand-ins
of ``deploy/compose/compose.standin.yaml``. Each is built once and kept by the engine:

- Debian bookworm: ``debootstrap --variant=minbase`` from the machine's own mirror, imported;
- Python 3.11 (``Dockerfile.python``): Debian's Python with pip and venv where upstream has them;
- Airflow (``Dockerfile.airflow``): upstream's user, virtual environment, paths and entrypoint;
- PostgreSQL (``Dockerfile.postgres``) and an S3 server (``Dockerfile.s3``, moto) for compose.

Every file named here is in ``deploy/docker/standin``, which says what each offers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from healthpredict.delivery import engine
from healthpredict.delivery.engine import STANDIN_DIR, ImageError

DEBIAN = "localhost/healthpredict-standin/debian:bookworm"
PYTHON = "localhost/healthpredict-standin/python:3.11-bookworm"
AIRFLOW = "localhost/healthpredict-standin/airflow:3.11-bookworm"
POSTGRES = "localhost/healthpredict-standin/postgres:15-bookworm"
S3 = "localhost/healthpredict-standin/s3:moto"


def debian() -> str:
    """A Debian bookworm image from ``debootstrap --variant=minbase`` (about a minute).

    Raises:
        ImageError: debootstrap is missing or fails, or the machine has no Debian mirror.
    """
    if engine.available(DEBIAN, pull=False):
        return DEBIAN
    if shutil.which("debootstrap") is None:
        raise ImageError("the stand-in base needs debootstrap (Debian package debootstrap)")
    with tempfile.TemporaryDirectory(prefix="healthpredict-rootfs-") as folder:
        rootfs = Path(folder) / "rootfs"
        engine.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), debian_mirror()])
        # The mirror debootstrap used is the machine's: the image keeps no package source.
        for sources in (rootfs / "etc/apt/sources.list", *rootfs.glob("etc/apt/sources.list.d/*")):
            sources.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        engine.run([*engine.engine(), "import", "-", DEBIAN], stdin=tar.stdout)
        tar.wait()
    return DEBIAN


def debian_mirror() -> str:
    """The machine's Debian archive, from its own apt sources.

    Raises:
        ImageError: No source for Debian's main archive is configured.
    """
    for path in sorted(engine.APT_DIR.glob("sources.list.d/*.sources")):
        for uri in re.findall(r"^URIs:\s*(\S+)", path.read_text(), flags=re.MULTILINE):
            if not uri.rstrip("/").endswith("-security"):
                return uri
    list_file = engine.APT_DIR / "sources.list"
    if list_file.is_file():
        found = re.search(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", list_file.read_text(), flags=re.MULTILINE
        )
        if found:
            return found.group(1)
    raise ImageError(f"no Debian archive in {engine.APT_DIR}/sources.list(.d): cannot debootstrap")


def python() -> str:
    """The stand-in Python base (Debian's apt installs its own CA bundle, so none is mounted)."""
    return _on(debian(), PYTHON, "Dockerfile.python", "DEBIAN_IMAGE", with_ca=False)


def airflow() -> str:
    """The stand-in Airflow base: the ``airflow`` user, its venv, upstream's entrypoint."""
    return _on(python(), AIRFLOW, "Dockerfile.airflow", "PYTHON_IMAGE", with_ca=False)


def postgres() -> str:
    """Debian's PostgreSQL behind the upstream image's entrypoint interface."""
    return _on(debian(), POSTGRES, "Dockerfile.postgres", "DEBIAN_IMAGE", with_ca=False)


def s3() -> str:
    """moto's S3 server (from the repository root: it installs at the lock's versions)."""
    return _on(python(), S3, "Dockerfile.s3", "PYTHON_IMAGE", context=engine.ROOT)


def _on(
    base: str,
    tag: str,
    dockerfile: str,
    argument: str,
    with_ca: bool = True,
    context: Path = STANDIN_DIR,
) -> str:
    """Build stand-in ``tag`` on ``base`` unless the engine has it already."""
    if not engine.available(tag, pull=False):
        engine.build_image(STANDIN_DIR / dockerfile, tag, context, {argument: base}, base, with_ca)
    return tag
