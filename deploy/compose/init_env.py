"""Write deploy/compose/.env from .env.example, with a new random value for every empty secret.

Usage (from anywhere; standard library only, so no venv is needed):
    python3 deploy/compose/init_env.py            # refuses to replace an existing .env
    python3 deploy/compose/init_env.py --force    # new secrets: only before the first start,
                                                  # the databases keep the old passwords

The file is created readable by its owner only. Values already set in .env.example (the
non-secret settings) are copied unchanged.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Generators for the secrets whose form is imposed from outside; every other empty value
# gets a URL-safe token (it may end up in a database URL).
SPECIAL: dict[str, Callable[[], str]] = {
    # Airflow requires a Fernet key: urlsafe base64 of exactly 32 bytes.
    "AIRFLOW_FERNET_KEY": lambda: base64.urlsafe_b64encode(os.urandom(32)).decode(),
    # MinIO user names are identifiers, not secrets; random ones avoid a guessable default.
    "MINIO_ROOT_USER": lambda: f"admin-{secrets.token_hex(4)}",
    "MLFLOW_S3_ACCESS_KEY_ID": lambda: f"mlflow-{secrets.token_hex(8)}",
}


def fill(template: str, generate: Callable[[str], str]) -> str:
    """Return ``template`` (dotenv text) with every ``NAME=`` line given ``generate(NAME)``."""
    lines = []
    for line in template.splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#") and not value.strip():
            line = f"{name}={generate(name.strip())}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def new_secret(name: str) -> str:
    """A fresh random value for the secret ``name``."""
    special = SPECIAL.get(name)
    return special() if special else secrets.token_urlsafe(32)


def main(argv: list[str] | None = None) -> int:
    """Write the .env file; exit status 1 when it exists and --force is not given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=HERE / ".env")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    if args.output.exists() and not args.force:
        print(f"{args.output} exists; keep it, or pass --force to replace it", file=sys.stderr)
        return 1
    text = fill((HERE / ".env.example").read_text(), new_secret)
    # Created 0600 from the start: the secrets are never readable by others, not even briefly.
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.chmod(args.output, 0o600)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
