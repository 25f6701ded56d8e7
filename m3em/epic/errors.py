"""The one base class of "the input is wrong" errors.

Every error a stage raises because a file, a config value or a command-line argument given to it
is unusable derives from :class:`InputError`, and its message starts with the file (or key) and
says what is wrong with it. Entry points (:func:`m3em.epic.cli.run_entry_point`) turn an
``InputError`` into one line on stderr and exit status 1; any other exception is a bug and keeps
its traceback.
"""

from __future__ import annotations


class InputError(Exception):
    """A file, config value or argument the user gave that a stage cannot use; the message names it."""
