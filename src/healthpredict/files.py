"""Writing a file so that a reader sees the old content or the new, never half of either.

The new content goes to a temporary file beside the target (the same file system, so the final
rename is atomic), is flushed to disk, and only then replaces the target. A failure on the way
leaves the target as it was and removes the temporary file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# What a plain open() gives under the usual umask; mkstemp's private 0o600 would otherwise
# survive the rename, and these files (reports, models, logs) are meant to be read.
DEFAULT_MODE = 0o644


def write_atomically(path: Path, data: bytes | str, mode: int = DEFAULT_MODE) -> Path:
    """Replace ``path`` with ``data`` (text is written as UTF-8) in one step.

    Args:
        path: The file to write; its folder must exist.
        data: The whole new content.
        mode: Permission bits of the new file.

    Returns:
        ``path``.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path, mode) as temporary:
        temporary.write_bytes(payload)
    return path


@contextlib.contextmanager
def atomic_path(path: Path, mode: int = DEFAULT_MODE) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on a clean exit it replaces ``path``.

    For writers that want a path rather than bytes (``DataFrame.to_parquet``, a compiler).
    The temporary file exists (empty) when the block starts; the writer may overwrite it.

    Raises:
        FileNotFoundError: ``path``'s folder does not exist.
    """
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        temporary.chmod(mode)
        move_into_place(temporary, path)
    except BaseException:  # KeyboardInterrupt too: no temporary file is left behind
        temporary.unlink(missing_ok=True)
        raise


def move_into_place(temporary: Path, path: Path) -> None:
    """Flush ``temporary`` to disk, then rename it onto ``path`` (same file system).

    The flush comes first so that after a crash ``path`` holds the old content or the whole
    new one, never a renamed but empty file.
    """
    with open(temporary, "rb") as written:
        os.fsync(written.fileno())
    os.replace(temporary, path)
