"""A restricted unpickler for the official EPIC pickles.

Unpickling runs code: a pickle may name any importable callable. The official annotation
pickles (pandas DataFrames) and feature pickles (dicts of numpy arrays) only need a handful of
pandas and numpy classes, so :func:`safe_load` admits exactly those and refuses everything else
*before* anything is called.
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any

# (module, name) pairs a DataFrame / ndarray pickle needs. Old pickles name numpy's private
# modules by their numpy 1.x paths; both spellings are admitted and resolved by import.
_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("builtins", "slice"),
        ("__builtin__", "slice"),
        ("builtins", "list"),
        ("builtins", "dict"),
        ("builtins", "tuple"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "object"),
        ("copy_reg", "_reconstructor"),
        ("copyreg", "_reconstructor"),
        ("_codecs", "encode"),
        ("collections", "OrderedDict"),
        ("datetime", "datetime"),
        ("datetime", "timedelta"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("pandas.core.frame", "DataFrame"),
        ("pandas.core.series", "Series"),
        ("pandas.core.internals.managers", "BlockManager"),
        ("pandas.core.internals.managers", "SingleBlockManager"),
        ("pandas.core.internals.blocks", "new_block"),
        ("pandas._libs.internals", "_unpickle_block"),
        ("pandas.core.indexes.base", "Index"),
        ("pandas.core.indexes.base", "_new_Index"),
        ("pandas.core.indexes.range", "RangeIndex"),
        ("pandas.core.indexes.numeric", "Int64Index"),
        ("pandas.core.indexes.category", "CategoricalIndex"),
        ("pandas.core.indexes.multi", "MultiIndex"),
        ("pandas.core.arrays.categorical", "Categorical"),
        ("pandas.core.arrays.string_", "StringArray"),
        ("pandas.core.dtypes.dtypes", "CategoricalDtype"),
        ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
        ("pandas._libs.tslibs.timestamps", "_unpickle_timestamp"),
        ("pandas._libs.tslibs.timedeltas", "_timedelta_unpickle"),
        # pandas >= 3 pickles string columns as Arrow-backed arrays.
        ("builtins", "bytearray"),
        ("__builtin__", "bytearray"),
        ("pandas", "DataFrame"),
        ("pandas", "Series"),
        ("pandas", "Index"),
        ("pandas", "StringDtype"),
        ("pandas.arrays", "ArrowStringArray"),
        ("pandas.core.arrays.string_arrow", "ArrowStringArray"),
        ("pyarrow.lib", "_restore_array"),
        ("pyarrow.lib", "py_buffer"),
        ("pyarrow.lib", "type_for_alias"),
    }
)

# numpy 2 moved numpy.core to numpy._core; importing the old path warns, so map it.
_RENAMES = {"numpy.core.multiarray": "numpy._core.multiarray", "numpy.core.numeric": "numpy._core.numeric",
            "__builtin__": "builtins", "copy_reg": "copyreg"}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, fh: io.BufferedIOBase, source: str) -> None:
        super().__init__(fh, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(
                f"{self._source}: refusing to unpickle {module}.{name}: only pandas/numpy data classes are allowed"
            )
        target = _RENAMES.get(module, module)
        try:
            return getattr(importlib.import_module(target), name)
        except (ImportError, AttributeError):
            return getattr(importlib.import_module(module), name)


def _load(fh: io.BufferedIOBase, source: str) -> Any:
    try:
        return _RestrictedUnpickler(fh, source).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise pickle.UnpicklingError(f"{source}: corrupt or unsupported pickle: {exc}") from exc


def safe_load(path: str | Path) -> Any:
    """Unpickle ``path`` admitting only the pandas/numpy classes an EPIC pickle needs.

    Raises:
        UnsafePickleError: the pickle names any other global (nothing is executed).
        pickle.UnpicklingError: the file is not a valid pickle (message names the file).
    """
    with open(path, "rb") as fh:
        return _load(fh, str(path))


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Like :func:`safe_load` for an in-memory pickle."""
    return _load(io.BytesIO(data), source)
