"""The one convention every ``python -m ...`` entry point follows.

* ``--config`` is read with :func:`load_job_config` into the frozen dataclass of the sections the
  entry point uses (schema-validated first; no dict travels further).
* A bad input (:class:`m3em.epic.errors.InputError`, a missing or unreadable file) is one line on
  stderr, ``<prog>: error: <file>: <problem>``, and exit status 1; anything else is a bug and
  keeps its traceback.
* Progress and results are reported with :mod:`logging` (one format for all stages; tqdm bars
  stay on stderr); only a command whose output *is* its result (a path, a table) prints it.
  Loggers are named after the module spelled out (``logging.getLogger("m3em.report")``), since
  ``__name__`` is ``__main__`` under ``python -m``.

Usage::

    def main(argv=None) -> int:
        return run_entry_point("python -m extractors.flow", _parser(), _run, argv)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from m3em.epic.config import build_dataclass, load_config
from m3em.epic.errors import InputError

T = TypeVar("T")

#: Exceptions that mean "the input is wrong", reported as one line and exit 1.
INPUT_ERRORS: tuple[type[BaseException], ...] = (InputError, FileNotFoundError, IsADirectoryError,
                                                 NotADirectoryError, PermissionError)

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """INFO-level logging to stderr in the pipeline's format (a no-op if already configured)."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)


def load_job_config(path: str | Path, cls: type[T]) -> T:
    """Read and validate ``path``, then build ``cls`` from the top-level sections it declares.

    ``cls`` is a frozen dataclass whose fields are config sections (``data: DataConfig``,
    ``flow: FlowConfig``); sections absent from the file take the field's default.

    Raises:
        m3em.epic.config.ConfigError: the file is missing, not YAML, fails the schema, or lacks a required section.
    """
    cfg = load_config(path)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    return build_dataclass(cls, {n: cfg[n] for n in names if n in cfg}, str(path))


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (multi-line messages joined with ``; ``)."""
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in str(exc.strerror or ""):
        text = f"{exc.filename}: {exc.strerror or exc}"
    else:
        text = str(exc) or type(exc).__name__
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def run_entry_point(prog: str, parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int | None],
                    argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run ``body(args)`` and map a bad input to one stderr line and exit 1.

    Argument errors are argparse's (exit 2, usage on stderr). ``body`` returns None or an exit
    status. Exceptions other than :data:`INPUT_ERRORS` propagate with their traceback.
    """
    args = parser.parse_args(argv)
    configure_logging()
    try:
        status = body(args)
    except INPUT_ERRORS as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0 if status is None else int(status)


__all__ = ["INPUT_ERRORS", "configure_logging", "load_job_config", "one_line", "run_entry_point"]
