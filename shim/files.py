"""The one way pycni writes a file that must never be seen half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile


def atomic_write(path: str, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temp file beside it (mode 0600, in a 0700
    directory made if needed), then a rename. Raises OSError."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
