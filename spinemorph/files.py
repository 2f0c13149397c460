"""File content helpers: the SHA-256 digest of a file (weights files, catalogue checks, run provenance)."""

from __future__ import annotations

import hashlib
import os

#: bytes read at a time
CHUNK_BYTES = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 digest of the file at ``path`` (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            h.update(chunk)
    return h.hexdigest()
