"""A restricted unpickler for the official EPIC pickles.

Unpickling runs code: a pickle may name any importable callable. The official annotation
pickles (pandas DataFrames) and feature pickles (dicts of numpy arrays) only need a handful of
pandas and numpy classes, so :func:`safe_load` admits exactly those and refuses everything else
*before* anything is called.

Admitting a class is not enough: admitted callables can still be fed hostile arguments. So the
load runs on Python's opcode-level unpickler with every call, ``BUILD`` and item store checked:

* pyarrow's array reconstructors are never called. pandas 3 pickles string columns as Arrow
  arrays (offsets + data buffers); those names resolve to stand-ins here that check the offsets
  against the data and rebuild the array from Python strings, so a buffer that claims more data
  than it holds is an error, not an out-of-bounds read.
* allocation is capped: a size given as a number (``bytearray(n)``, an array shape, a
  ``RangeIndex`` length, a container built from a lazy iterable) is refused, and the bytes that
  calls copy are counted against :func:`allocation_cap` of the file's size.
* ``BUILD`` only sets the state of instances (never of a class), and item stores only fill plain
  lists, dicts and sets (never call an admitted object's ``__setitem__``).
* pandas containers are checked before they are used: block placements cover the columns
  exactly, block shapes match the axes, categorical codes index their categories.
* any other exception while building or checking becomes :class:`pickle.UnpicklingError`
  naming the file.
"""

from __future__ import annotations

import importlib
import io
import math
import os
import pickle
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

from m3em.epic.errors import InputError

# (module, name) pairs a DataFrame / ndarray pickle needs, as pandas 1.x-3.x and numpy 1.x/2.x
# write them. Old pickles name numpy's private modules by their numpy 1.x paths; both spellings
# are admitted and resolved by import.
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
        ("builtins", "bytearray"),
        ("__builtin__", "bytearray"),
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
        # pandas >= 3 names its classes by their public paths.
        ("pandas", "DataFrame"),
        ("pandas", "Series"),
        ("pandas", "Index"),
        ("pandas", "RangeIndex"),
        ("pandas", "CategoricalIndex"),
        ("pandas", "MultiIndex"),
        ("pandas", "Categorical"),
        ("pandas", "CategoricalDtype"),
        ("pandas", "StringDtype"),
        ("pandas.arrays", "StringArray"),
        ("pandas.arrays", "ArrowStringArray"),
        ("pandas.core.arrays.string_arrow", "ArrowStringArray"),
        # pandas >= 3 pickles string columns as Arrow arrays: these resolve to the checked
        # stand-ins below, never to pyarrow's own reconstructors.
        ("pyarrow.lib", "_restore_array"),
        ("pyarrow.lib", "py_buffer"),
        ("pyarrow.lib", "type_for_alias"),
    }
)

# numpy 2 moved numpy.core to numpy._core; importing the old path warns, so map it.
_RENAMES = {"numpy.core.multiarray": "numpy._core.multiarray", "numpy.core.numeric": "numpy._core.numeric",
            "__builtin__": "builtins", "copy_reg": "copyreg"}

#: Floor of :func:`allocation_cap` (bytes): small files may still build small objects freely.
ALLOCATION_FLOOR = 64 * 2**20
#: Bytes a file may make us copy per byte of its own size.
ALLOCATION_FACTOR = 8


def allocation_cap(file_size: int) -> int:
    """Bytes the objects built from a pickle of ``file_size`` bytes may take beyond the file's own."""
    return ALLOCATION_FLOOR + ALLOCATION_FACTOR * max(int(file_size), 0)


class UnsafePickleError(pickle.UnpicklingError, InputError):
    """The pickle names a global outside the allow-list, or uses an admitted one in a way no
    pandas/numpy data pickle does."""


class _ArrowStringType:
    """Stand-in for ``pyarrow.lib.type_for_alias``: only Arrow's string types are admitted."""

    OFFSET_DTYPES = {"string": "<i4", "utf8": "<i4", "large_string": "<i8", "large_utf8": "<i8"}

    def __init__(self, alias: str) -> None:
        if alias not in self.OFFSET_DTYPES:
            raise UnsafePickleError(f"Arrow type {alias!r}: only string columns are admitted")
        self.alias = alias


def _arrow_buffer(data: Any) -> bytes:
    """Stand-in for ``pyarrow.lib.py_buffer``: the bytes themselves."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError(f"Arrow buffer from {type(data).__name__}: only bytes are admitted")
    return bytes(data)


def _restore_string_array(state: Any) -> Any:
    """Stand-in for ``pyarrow.lib._restore_array`` of a string array, checking every buffer.

    ``state`` is ``(type, length, null_count, offset, buffers, children, dictionary)`` with buffers
    ``[validity or None, offsets, data]``. The offsets must be non-decreasing and lie within the
    data; the array is rebuilt by pyarrow from the decoded Python strings.
    """
    import numpy as np
    import pyarrow as pa

    if not (isinstance(state, tuple) and len(state) == 7):
        raise UnsafePickleError("Arrow array state is not a 7-tuple")
    typ, length, null_count, offset, buffers, children, dictionary = state
    if not isinstance(typ, _ArrowStringType):
        raise UnsafePickleError("Arrow array of a type other than string")
    if not all(isinstance(v, int) and v >= 0 for v in (length, null_count, offset)):
        raise ValueError("Arrow array length, null count and offset must be non-negative integers")
    if children or dictionary is not None or not isinstance(buffers, list) or len(buffers) != 3:
        raise ValueError("Arrow string array must have three buffers, no children and no dictionary")
    validity, offsets_buf, data = buffers
    if not isinstance(offsets_buf, bytes) or not isinstance(data, bytes) or not (
            validity is None or isinstance(validity, bytes)):
        raise ValueError("Arrow string array buffers must be bytes")
    dtype = np.dtype(_ArrowStringType.OFFSET_DTYPES[typ.alias])
    n = offset + length
    if len(offsets_buf) < (n + 1) * dtype.itemsize:
        raise ValueError(f"Arrow string array of {n} values has an offsets buffer of {len(offsets_buf)} bytes")
    offsets = np.frombuffer(offsets_buf, dtype=dtype, count=n + 1)
    if (offsets[0] < 0 or (np.diff(offsets) < 0).any() or int(offsets[-1]) > len(data)):
        raise ValueError(f"Arrow string array offsets run outside its {len(data)}-byte data buffer")
    if validity is not None and len(validity) * 8 < n:
        raise ValueError(f"Arrow validity bitmap of {len(validity)} bytes for {n} values")
    valid = (np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little")[:n].astype(bool)
             if validity is not None else np.ones(n, bool))
    values = [data[offsets[i]:offsets[i + 1]].decode("utf-8") if valid[i] else None for i in range(offset, n)]
    if null_count != sum(v is None for v in values):
        raise ValueError(f"Arrow string array null count {null_count} disagrees with its validity bitmap")
    return pa.array(values, type=pa.large_string() if dtype.itemsize == 8 else pa.string())


_STANDINS: dict[tuple[str, str], Any] = {
    ("pyarrow.lib", "_restore_array"): _restore_string_array,
    ("pyarrow.lib", "py_buffer"): _arrow_buffer,
    ("pyarrow.lib", "type_for_alias"): _ArrowStringType,
}

_CONCRETE = (list, tuple, dict, set, frozenset, str, bytes, bytearray)


def _nbytes(obj: Any) -> int:
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(obj, (bytes, bytearray, str)):
        return len(obj)
    if isinstance(obj, (list, tuple, dict, set, frozenset)):
        return 8 * len(obj)
    return 0


class _CheckedUnpickler(pickle._Unpickler):  # the Python unpickler: its opcodes can be intercepted
    def __init__(self, fh: io.BufferedIOBase, source: str, cap: int) -> None:
        super().__init__(fh, encoding="latin1")
        self._source = source
        self._cap = cap
        self._spent = 0
        self._checks = _pandas_checks()

    # -- globals -------------------------------------------------------------------------------
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(
                f"{self._source}: refusing to unpickle {module}.{name}: only pandas/numpy data classes are allowed"
            )
        if (module, name) in _STANDINS:
            return _STANDINS[(module, name)]
        target = _RENAMES.get(module, module)
        try:
            return getattr(importlib.import_module(target), name)
        except (ImportError, AttributeError):
            return getattr(importlib.import_module(module), name)

    # -- accounting ----------------------------------------------------------------------------
    def _spend(self, nbytes: int, what: str) -> None:
        self._spent += int(nbytes)
        if self._spent > self._cap:
            raise UnsafePickleError(f"{self._source}: {what} would take the unpickled data past "
                                    f"{self._cap / 2**20:.0f} MiB (the cap for a file of this size)")

    def _elements(self, n: int, itemsize: int, what: str) -> None:
        if n * max(itemsize, 1) > self._cap:
            raise UnsafePickleError(f"{self._source}: {what} asks for {n} elements, past the allocation cap")

    # -- calls ---------------------------------------------------------------------------------
    def _call(self, func: Any, args: Any, kwargs: dict | None = None) -> Any:
        import numpy as np

        kwargs = kwargs or {}
        if not isinstance(args, tuple):
            raise UnsafePickleError(f"{self._source}: call arguments are not a tuple")
        name = getattr(func, "__qualname__", type(func).__name__)
        if func is bytearray or func in (list, tuple, set, frozenset, dict):
            # Copies of data the file holds; never a size or a lazy iterable (list(RangeIndex(10**15))).
            if kwargs or len(args) > 1 or (args and not isinstance(args[0], _CONCRETE)):
                raise UnsafePickleError(f"{self._source}: {name}() of {type(args[0]).__name__ if args else '?'} "
                                        "is not admitted (sizes and iterables could allocate without bound)")
            self._spend(_nbytes(args[0]) if args else 0, f"{name}()")
        elif func is np.ndarray:
            raise UnsafePickleError(f"{self._source}: numpy.ndarray() called directly is not admitted")
        elif getattr(func, "__name__", "") == "_reconstruct" and getattr(func, "__module__", "").startswith("numpy"):
            if len(args) != 3 or args[0] is not np.ndarray or not isinstance(args[1], tuple):
                raise UnsafePickleError(f"{self._source}: numpy _reconstruct with unexpected arguments")
            self._elements(math.prod(int(d) for d in args[1]), 1, "an array shape")
        elif getattr(func, "__name__", "") == "encode" and func.__module__ == "_codecs":
            if len(args) != 2 or args[1] not in ("latin1", "latin-1", "iso-8859-1") or not isinstance(args[0], str):
                raise UnsafePickleError(f"{self._source}: _codecs.encode is admitted for latin-1 text only")
            self._spend(len(args[0]), "a latin-1 encode")
        elif getattr(func, "__name__", "") == "_reconstructor":
            if len(args) != 3 or args[1] is not object:
                raise UnsafePickleError(f"{self._source}: copyreg._reconstructor is admitted with base object only")
        elif getattr(func, "__name__", "") == "_new_Index":
            self._check_new_index(args)
        elif isinstance(func, type) and func.__module__.startswith("pandas") and func.__name__ in (
                "DataFrame", "Series", "Index", "RangeIndex", "CategoricalIndex", "MultiIndex", "Categorical",
                "StringArray", "ArrowStringArray"):
            # Pickles make these by __new__ + state; their constructors build data from lazy inputs.
            raise UnsafePickleError(f"{self._source}: calling pandas.{func.__name__}() is not admitted")
        result = func(*args, **kwargs)
        if func is _restore_string_array:
            self._spend(_nbytes(result), "an Arrow string array")
        self._checks(result, self._source)
        return result

    def _check_new_index(self, args: tuple) -> None:
        import pandas as pd

        if len(args) != 2 or not isinstance(args[0], type) or not isinstance(args[1], dict):
            raise UnsafePickleError(f"{self._source}: _new_Index with unexpected arguments")
        cls, d = args
        if issubclass(cls, pd.RangeIndex):
            start, stop, step = d.get("start", 0), d.get("stop", 0), d.get("step", 1)
            if not all(isinstance(v, int) for v in (start, stop, step)) or step == 0:
                raise ValueError(f"RangeIndex start/stop/step must be integers with step != 0, got {start, stop, step}")
            self._elements(len(range(start, stop, step)), 8, "a RangeIndex")
        elif "data" in d and not isinstance(d["data"], _data_types()):
            raise UnsafePickleError(f"{self._source}: an index of {type(d['data']).__name__} is not admitted")

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        self.stack[-1] = self._call(func, args)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, {}))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, kwargs))

    def _new(self, cls: Any, args: Any, kwargs: Any) -> Any:
        if not isinstance(cls, type) or args or kwargs:
            # Every admitted class pickles as an empty __new__ followed by BUILD; arguments to
            # __new__ (an ndarray shape, a RangeIndex stop) could allocate without bound.
            raise UnsafePickleError(f"{self._source}: NEWOBJ of {getattr(cls, '__name__', cls)!r} with arguments "
                                    "is not admitted")
        return cls.__new__(cls)

    def _instantiate(self, klass: Any, args: Any) -> None:  # protocol-0 INST / OBJ
        self.append(self._call(klass, tuple(args)))

    def load_build(self) -> None:
        inst = self.stack[-2]
        if isinstance(inst, (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType)):
            # Setting attributes of a class would patch it for the whole process.
            raise UnsafePickleError(f"{self._source}: BUILD on {getattr(inst, '__name__', inst)!r} is not admitted "
                                    "(only instances take a state)")
        super().load_build()
        self._spend(_nbytes(inst), f"a {type(inst).__name__}")
        self._checks(inst, self._source)

    # -- item stores: plain containers only ----------------------------------------------------
    def _plain(self, obj: Any, kinds: tuple[type, ...], op: str) -> None:
        if type(obj) not in kinds:
            raise UnsafePickleError(f"{self._source}: {op} on a {type(obj).__name__} is not admitted")

    def load_append(self) -> None:
        self._plain(self.stack[-2], (list,), "APPEND")
        super().load_append()

    def load_appends(self) -> None:
        self._plain(self.metastack[-1][-1] if self.metastack else None, (list,), "APPENDS")
        super().load_appends()

    def load_setitem(self) -> None:
        self._plain(self.stack[-3], (dict, OrderedDict), "SETITEM")
        super().load_setitem()

    def load_setitems(self) -> None:
        self._plain(self.metastack[-1][-1] if self.metastack else None, (dict, OrderedDict), "SETITEMS")
        super().load_setitems()

    def load_additems(self) -> None:
        self._plain(self.metastack[-1][-1] if self.metastack else None, (set,), "ADDITEMS")
        super().load_additems()

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.APPEND[0]] = load_append
    dispatch[pickle.APPENDS[0]] = load_appends
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.ADDITEMS[0]] = load_additems


def _data_types() -> tuple[type, ...]:
    import numpy as np
    import pandas as pd

    return (np.ndarray, pd.api.extensions.ExtensionArray, pd.Index, list, tuple)


def _pandas_checks():
    """A function checking one freshly built pandas object for the invariants pandas assumes."""
    import numpy as np
    import pandas as pd
    from pandas.core.internals.managers import BlockManager, SingleBlockManager

    def check(obj: Any, source: str) -> None:
        if isinstance(obj, pd.Categorical) and getattr(obj, "_ndarray", None) is not None:
            codes = obj._ndarray
            if not isinstance(codes, np.ndarray) or codes.dtype.kind != "i" or codes.ndim != 1:
                raise ValueError("categorical codes must be a 1-d integer array")
            cats = obj._dtype.categories if isinstance(obj._dtype, pd.CategoricalDtype) else None
            n = len(cats) if cats is not None else 0
            if codes.size and (codes.min() < -1 or codes.max() >= n):
                raise ValueError(f"categorical codes outside [-1, {n}) (the number of categories)")
        elif isinstance(obj, BlockManager) and not isinstance(obj, SingleBlockManager) and hasattr(obj, "blocks"):
            if len(obj.axes) != 2:
                raise ValueError("a DataFrame's block manager must have two axes")
            n_items, n_rows = len(obj.axes[0]), len(obj.axes[1])
            seen = np.zeros(n_items, dtype=np.int64)
            for blk in obj.blocks:
                if len(blk.mgr_locs) > n_items:  # a slice placement's length, before materialising it
                    raise ValueError(f"a block is placed on {len(blk.mgr_locs)} of {n_items} columns")
                locs = np.asarray(blk.mgr_locs.as_array)
                if locs.ndim != 1 or (locs.size and (locs.min() < 0 or locs.max() >= n_items)):
                    raise ValueError(f"a block is placed outside the {n_items} columns")
                np.add.at(seen, locs, 1)
                shape = tuple(blk.values.shape)
                want = (len(locs), n_rows) if len(shape) == 2 else (n_rows,)
                if shape != want or (len(shape) == 1 and len(locs) != 1):
                    raise ValueError(f"a block of shape {shape} does not fit {len(locs)} column(s) x {n_rows} rows")
            if not (seen == 1).all():
                raise ValueError("the blocks do not cover every column exactly once")
        elif isinstance(obj, SingleBlockManager) and hasattr(obj, "blocks"):
            if len(obj.blocks) != 1 or len(obj.blocks[0].values) != len(obj.axes[0]):
                raise ValueError("a Series' values do not match its index")
        elif isinstance(obj, (pd.DataFrame, pd.Series)) and "_mgr" in obj.__dict__:
            mgr = obj.__dict__["_mgr"]
            want = BlockManager if isinstance(obj, pd.DataFrame) else SingleBlockManager
            if type(mgr) is not want:
                raise ValueError(f"a {type(obj).__name__} whose data is a {type(mgr).__name__}")
            check(mgr, source)
        elif getattr(type(obj), "__name__", "") == "ArrowStringArray" and "_pa_array" in obj.__dict__:
            import pyarrow as pa

            arr = obj.__dict__["_pa_array"]
            if not isinstance(arr, pa.ChunkedArray) or not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
                raise ValueError("an Arrow string column without a string array")

    return check


def _check_tree(obj: Any, check, source: str, depth: int = 0) -> None:
    """Check every pandas object reachable through plain containers and pandas objects."""
    import pandas as pd

    if depth > 50:
        return
    if isinstance(obj, dict):
        for v in obj.values():
            _check_tree(v, check, source, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_tree(v, check, source, depth + 1)
    elif isinstance(obj, (pd.DataFrame, pd.Series)):
        if "_mgr" not in obj.__dict__:
            raise ValueError(f"a {type(obj).__name__} without data")
        check(obj, source)
        for blk in obj.__dict__["_mgr"].blocks:
            check(blk.values, source)
        for ax in obj.__dict__["_mgr"].axes:
            check(getattr(ax, "_data", None), source)


def _load(fh: io.BufferedIOBase, source: str, size: int) -> Any:
    unpickler = _CheckedUnpickler(fh, source, allocation_cap(size))
    try:
        obj = unpickler.load()
        _check_tree(obj, unpickler._checks, source)
        return obj
    except UnsafePickleError:
        raise
    except MemoryError as exc:
        raise pickle.UnpicklingError(f"{source}: unpickling ran out of memory (a hostile or corrupt pickle?)") from exc
    except RecursionError as exc:
        raise pickle.UnpicklingError(f"{source}: corrupt or unsupported pickle: nested too deeply") from exc
    except Exception as exc:  # whatever the admitted constructors raise on malformed state
        raise pickle.UnpicklingError(f"{source}: corrupt or unsupported pickle: {type(exc).__name__}: {exc}") from exc


def safe_load(path: str | Path) -> Any:
    """Unpickle ``path`` admitting only the pandas/numpy classes an EPIC pickle needs.

    Raises:
        UnsafePickleError: the pickle names any other global, or uses an admitted one in a way
            data pickles do not (nothing outside the allow-list is executed).
        pickle.UnpicklingError: the file is not a valid pickle, its objects are inconsistent, or it
            would allocate past :func:`allocation_cap` (the message names the file).
    """
    with open(path, "rb") as fh:
        return _load(fh, str(path), os.fstat(fh.fileno()).st_size)


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Like :func:`safe_load` for an in-memory pickle."""
    return _load(io.BytesIO(data), source, len(data))
