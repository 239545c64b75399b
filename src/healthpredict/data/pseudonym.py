"""Keyed hashing of patient and encounter ids, so that no direct identifier is stored in clear.

The salt is a secret: from settings (``HEALTHPREDICT_ID_SALT``) or, on a laptop, generated once
and kept readable only by its owner under ``<data_dir>/secrets``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from healthpredict.settings import Settings

PATIENT_KEY = "patient_key"
ENCOUNTER_KEY = "encounter_key"
SEQUENCE = "sequence"
_KEY_HEX_CHARS = 20


def load_or_create_salt(settings: Settings) -> bytes:
    """Return the id salt from settings, else from (or newly into) the local secrets folder."""
    if settings.data.id_salt is not None:
        return settings.data.id_salt.get_secret_value().encode()
    path = settings.data.data_dir / "secrets" / "id_salt"
    if not path.exists():
        _write_private(path, secrets.token_hex(32))
    return path.read_text().strip().encode()


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def keyed_hash(values: pd.Series, salt: bytes) -> pd.Series:
    """HMAC-SHA256 of each value's text, truncated: stable per salt, not reversible without it."""
    return pd.Series(keyed_hashes(values.astype(str), salt), index=values.index, dtype=object)


def keyed_hashes(texts: Iterable[str], salt: bytes) -> list[str]:
    """:func:`keyed_hash` of plain texts (the batch job's ids), without pandas in between."""
    keyed = hmac.new(salt, digestmod=hashlib.sha256)  # the key schedule once, copied per value

    def key(text: str) -> str:
        digest = keyed.copy()
        digest.update(text.encode())
        return digest.hexdigest()[:_KEY_HEX_CHARS]

    return [key(text) for text in texts]


def pseudonymise(frame: pd.DataFrame, salt: bytes) -> pd.DataFrame:
    """Replace ``encounter_id``/``patient_nbr`` by keyed hashes; keep time order as ``sequence``.

    The frame must already be ordered in time: its row order becomes ``sequence``.
    """
    result = frame.drop(columns=["encounter_id", "patient_nbr"])
    result.insert(0, SEQUENCE, range(len(frame)))
    result.insert(1, ENCOUNTER_KEY, keyed_hash(frame["encounter_id"], salt).to_numpy())
    result.insert(2, PATIENT_KEY, keyed_hash(frame["patient_nbr"], salt).to_numpy())
    return result
