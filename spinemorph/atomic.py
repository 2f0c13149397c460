"""Atomic file writes: a temporary file in the target folder, then :func:`os.replace`.

A reader never sees a half-written file, and an interrupted write leaves the previous file (or nothing).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from spinemorph.errors import OutputError


def _describe_os_error(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device while writing {path}; free disk space and run again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: permission denied; choose a writable --out folder"
    return f"cannot write {path}: {exc.strerror or exc}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The temporary name keeps the final suffix (``suffix`` or that of ``path``, e.g. ``.nii.gz``) so that
    writers that choose a format from the extension (SimpleITK, matplotlib) still work.
    On any exception the temporary file is removed and the target is left untouched.
    """
    path = Path(path)
    if suffix is None:
        suffix = "".join(path.suffixes) or ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise OutputError(_describe_os_error(path, exc)) from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            # mkstemp creates files readable by the owner only: give them the usual umask-based permissions
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(_describe_os_error(path, exc)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def prepare_output_dir(out_dir: str | os.PathLike, overwrite: bool = False, expected: list[str] | None = None) -> Path:
    """Create ``out_dir`` (if needed) and check that it is writable.

    Parameters
    ----------
    out_dir : path
        Output folder.
    overwrite : bool
        If False and any of ``expected`` file names already exists in ``out_dir``, raise :class:`OutputError`.
    expected : list of str, optional
        File names the command is about to write.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is not a folder; choose another path")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(_describe_os_error(out, exc)) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {out} is not writable; choose a writable --out folder")
    if not overwrite and expected:
        existing = [name for name in expected if (out / name).exists()]
        if existing:
            raise OutputError(
                f"{out / existing[0]} already exists; pass --overwrite to replace it or choose another --out folder"
            )
    return out
