"""Atomic file output: write to a temporary name beside the target, rename when complete.

A killed job must never leave a file that looks finished, so every writer in the project goes
through :func:`atomic_output`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto ``path`` on success.

    On any exception the temporary file (or directory) is removed and ``path`` is left as it was,
    so an earlier complete output is never lost.

    Args:
        path: final output path. Its parent directory is created.
        suffix: suffix of the temporary name; defaults to the target's own suffix, which keeps
            libraries that dispatch on the extension (e.g. ``np.save``, zip writers) happy.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    # The temporary name starts with a dot and keeps the target's suffix, so globs for finished
    # outputs ("*.parquet") never match it while format-sniffing writers still see the extension.
    fd, tmp_name = tempfile.mkstemp(
        prefix=_temporary_prefix(target), suffix=suffix if suffix is not None else target.suffix, dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; give the output the permissions a plain open() would.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _temporary_prefix(target: Path) -> str:
    return f".{target.name}.tmp."


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries a killed earlier writer of ``path`` left beside it; returns them.

    A SIGKILL (an OOM kill, a cluster's time limit) skips the cleanup in :func:`atomic_output`, so
    the next run of the job removes them. An output has one writer at a time (Snakemake runs one
    job per output), so a temporary of the same target can only be a leftover.
    """
    target = Path(path)
    prefix = _temporary_prefix(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for entry in target.parent.iterdir():
        if entry.name.startswith(prefix):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
