"""MATLAB ``.mat`` files read with a memory budget, checked before anything large is allocated.

``scipy.io.loadmat`` trusts what a file declares: a 1 MB compressed file may declare (and
inflate to) a 12,500 x 10,000 double array, and a cell array declaring 10^9 elements is
allocated before its (absent) contents are read. :func:`load_mat` therefore walks the
file's own structure first:

* MAT v5 / v7: every data element's tag and every array's class and dimensions are read
  (compressed elements are inflated as a stream, at most ``max_bytes`` of output, and their
  array header is checked *before* the rest is inflated); the bytes the arrays would take
  once loaded, summed over the file, must stay within ``max_bytes``;
* MAT v4: each variable's declared rows x columns must fit the budget and the file;
* MAT v7.3 (HDF5), function handles and opaque objects are refused.

Only then does scipy parse the (now known-small) file.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

from prnet_keras.errors import InputError, LimitError

# Per-file budget: a 256² UV layout's mesh .mat (~44k vertices, 87k triangles) needs ~5 MB;
# 300W-LP fits a few kB.
MAX_MAT_BYTES = 32 * 2**20
_MAX_DEPTH = 16

# MAT v5 data types (element tags) and their sizes in bytes
_MI_SIZE = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8, 16: 1, 17: 2, 18: 4}
_MI_MATRIX, _MI_COMPRESSED, _MI_INT8, _MI_INT32, _MI_UINT32 = 14, 15, 1, 5, 6
# MAT v5 array classes -> bytes per element once loaded by scipy
_CLASS_SIZE = {4: 4, 6: 8, 7: 4, 8: 1, 9: 1, 10: 2, 11: 2, 12: 4, 13: 4, 14: 8, 15: 8}
_CELL, _STRUCT, _OBJECT, _CHAR, _SPARSE, _FUNCTION, _OPAQUE = 1, 2, 3, 4, 5, 16, 17


class _Budget:
    def __init__(self, name: str, limit: int) -> None:
        self.name, self.limit, self.used = name, int(limit), 0

    def take(self, nbytes: int, what: str) -> None:
        self.used += int(nbytes)
        if self.used > self.limit:
            raise LimitError(f"{self.name}: {what} would take {self.used} bytes or more in memory, more than the "
                             f"limit {self.limit} for a .mat file")


def _bad(name: str, why: str) -> InputError:
    return InputError(f"{name}: not a MATLAB .mat file ({why})")


class _Reader:
    """Tags and sub-elements of one byte string (the file, or one inflated element)."""

    def __init__(self, data: bytes | memoryview, order: str, name: str) -> None:
        self.data, self.order, self.name, self.pos = memoryview(data), order, name, 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def tag(self) -> tuple[int, int, memoryview]:
        """(data type, byte count, payload) of the next element; the position moves past its padding."""
        if self.remaining() < 8:
            raise _bad(self.name, "element tag cut short")
        first, second = struct.unpack_from(self.order + "II", self.data, self.pos)
        if first >> 16:  # small data element: type and size share the first word, data in the second
            mtype, nbytes = first & 0xFFFF, first >> 16
            if nbytes > 4:
                raise _bad(self.name, "small data element longer than 4 bytes")
            payload = self.data[self.pos + 4:self.pos + 4 + nbytes]
            self.pos += 8
            return mtype, nbytes, payload
        mtype, nbytes = first, second
        start = self.pos + 8
        if nbytes > len(self.data) - start:
            raise _bad(self.name, f"element declares {nbytes} bytes, {len(self.data) - start} remain")
        payload = self.data[start:start + nbytes]
        self.pos = start + (nbytes if mtype == _MI_COMPRESSED else nbytes + (-nbytes % 8))
        return mtype, nbytes, payload


def _ints(reader: _Reader, payload: memoryview, mtype: int, what: str) -> list[int]:
    if mtype not in (_MI_INT32, _MI_UINT32) or len(payload) % 4:
        raise _bad(reader.name, f"{what} is not a 32-bit integer element")
    code = "i" if mtype == _MI_INT32 else "I"
    return list(struct.unpack(f"{reader.order}{len(payload) // 4}{code}", payload))


def _array_header(r: _Reader) -> tuple[int, bool, int, list[int]]:
    """(class, complex, nzmax, dims) from the start of a miMATRIX payload."""
    mtype, _, flags = r.tag()
    words = _ints(r, flags, mtype, "array flags")
    if len(words) != 2:
        raise _bad(r.name, "array flags are not two words")
    mtype, _, dims_payload = r.tag()
    dims = _ints(r, dims_payload, mtype, "dimensions")
    if not dims or any(d < 0 for d in dims):
        raise _bad(r.name, f"dimensions {dims}")
    r.tag()  # array name
    return words[0] & 0xFF, bool(words[0] & 0x0800), words[1], dims


def _check_matrix(payload: memoryview, order: str, name: str, budget: _Budget, depth: int) -> None:
    """Walk one miMATRIX payload; every declared size goes through ``budget`` before its children."""
    if depth > _MAX_DEPTH:
        raise _bad(name, f"arrays nested more than {_MAX_DEPTH} deep")
    if len(payload) == 0:
        return  # an empty matrix (e.g. an empty cell element)
    r = _Reader(payload, order, name)
    cls, is_complex, nzmax, dims = _array_header(r)
    count = int(np.prod(dims, dtype=object))
    what = f"an array of {'x'.join(map(str, dims))}"
    if cls in (_FUNCTION, _OPAQUE) or cls not in _CLASS_SIZE and cls not in (_CELL, _STRUCT, _OBJECT, _SPARSE):
        raise _bad(name, f"unsupported MATLAB array class {cls}")
    if cls in _CLASS_SIZE or cls == _CHAR:
        size = _CLASS_SIZE.get(cls, 4)
        budget.take(count * size * (2 if is_complex else 1), what)
        for part in range(2 if is_complex else 1):
            mtype, nbytes, _ = r.tag()
            if mtype in _MI_SIZE and nbytes < count * _MI_SIZE[mtype]:
                which = "imaginary" if part else "real"
                raise _bad(name, f"{what} holds {nbytes} bytes of data, too few ({which} part)")
        return
    if cls == _SPARSE:
        budget.take(nzmax * 24 + (dims[-1] + 1) * 8, f"a sparse {what}")
        return
    budget.take(count * 8, what)  # cell / struct / object: one reference per element
    fields = 1
    if cls in (_STRUCT, _OBJECT):
        if cls == _OBJECT:
            r.tag()  # class name
        mtype, _, length = r.tag()
        (field_len,) = _ints(r, length, mtype, "field name length")[:1] or [0]
        _, nbytes, _ = r.tag()  # field names
        fields = nbytes // field_len if field_len > 0 else 0
    for _ in range(count * fields):
        mtype, _, sub = r.tag()
        if mtype != _MI_MATRIX:
            raise _bad(name, f"cell/struct element of type {mtype}, expected a matrix")
        _check_matrix(sub, order, name, budget, depth + 1)


def _inflate(payload: memoryview, order: str, name: str, budget: _Budget) -> bytes:
    """Inflate one miCOMPRESSED element to at most what remains of the budget; a numeric
    array's declared size is checked on the first few kB, before the rest is inflated."""
    d = zlib.decompressobj()
    left = budget.limit - budget.used
    try:
        head = d.decompress(payload, min(4096, left + 1))
        if len(head) > 8 and struct.unpack_from(order + "I", head)[0] == _MI_MATRIX:
            try:
                cls, is_complex, _, dims = _array_header(_Reader(head[8:], order, name))
            except InputError:
                cls, dims = -1, []  # header longer than the peek: the full walk below checks it
            if cls in _CLASS_SIZE:
                nbytes = int(np.prod(dims, dtype=object)) * _CLASS_SIZE[cls] * (2 if is_complex else 1)
                if nbytes > left:
                    raise LimitError(f"{name}: an array of {'x'.join(map(str, dims))} would take {nbytes} bytes, "
                                     f"more than the limit {budget.limit} for a .mat file")
        rest = d.decompress(d.unconsumed_tail, left + 1 - len(head)) if len(head) <= left else b""
    except zlib.error as exc:
        raise _bad(name, f"compressed element does not inflate: {exc}") from None
    if len(head) + len(rest) > left:
        raise LimitError(f"{name}: compressed data inflates to more than the limit {budget.limit} bytes "
                         "for a .mat file")
    return head + rest


def _check_v5(data: bytes, name: str, max_bytes: int) -> None:
    if len(data) < 128:
        raise _bad(name, "shorter than the 128-byte header")
    endian = bytes(data[126:128])
    if endian not in (b"IM", b"MI"):
        raise _bad(name, "no MAT v5 endian indicator")
    order = "<" if endian == b"IM" else ">"
    (version,) = struct.unpack_from(order + "H", data, 124)
    if version == 0x0200:
        raise InputError(f"{name}: MATLAB v7.3 (HDF5) .mat files are not supported; save with -v7")
    if version != 0x0100:
        raise _bad(name, f"unknown version 0x{version:04x}")
    budget = _Budget(name, max_bytes)
    top = _Reader(memoryview(data)[128:], order, name)
    while top.remaining() > 0:
        mtype, _, payload = top.tag()
        if mtype == _MI_COMPRESSED:
            inner = _Reader(_inflate(payload, order, name, budget), order, name)
            while inner.remaining() > 0:
                sub_type, _, sub = inner.tag()
                if sub_type == _MI_MATRIX:
                    _check_matrix(sub, order, name, budget, 0)
        elif mtype == _MI_MATRIX:
            _check_matrix(payload, order, name, budget, 0)


def _check_v4(data: bytes, name: str, max_bytes: int) -> None:
    pos, used = 0, 0
    order = "<" if 0 <= struct.unpack_from("<i", data)[0] < 5000 else ">"
    while pos < len(data):
        if len(data) - pos < 20:
            raise _bad(name, "MAT v4 header cut short")
        mopt, rows, cols, imag, namelen = struct.unpack_from(order + "5i", data, pos)
        if mopt < 0 or mopt > 5000 or rows < 0 or cols < 0 or namelen < 1:
            raise _bad(name, "MAT v4 header")
        size = (8, 4, 4, 2, 2, 1)[min((mopt // 10) % 10, 5)]
        nbytes = rows * cols * size * (2 if imag else 1)
        used += rows * cols * 8 * (2 if imag else 1)
        if used > max_bytes:
            raise LimitError(f"{name}: a {rows}x{cols} array would take {used} bytes or more in memory, more than "
                             f"the limit {max_bytes} for a .mat file")
        pos += 20 + namelen + nbytes
        if pos > len(data):
            raise _bad(name, f"a {rows}x{cols} array declares more data than the file holds")


def check_mat(data: bytes, name: str = "mat", max_bytes: int = MAX_MAT_BYTES) -> None:
    """Raise LimitError / InputError unless ``data`` is a .mat file whose arrays fit ``max_bytes``."""
    if not data:
        raise InputError(f"{name}: empty .mat file")
    if len(data) >= 128 and data[126:128] in (b"IM", b"MI"):
        _check_v5(data, name, max_bytes)
    elif len(data) >= 20 and (0 in data[:4]):
        _check_v4(data, name, max_bytes)
    else:
        raise _bad(name, "no MAT v4/v5 header")


def load_mat(data: bytes, name: str = "mat", max_bytes: int = MAX_MAT_BYTES) -> dict[str, np.ndarray]:
    """``.mat`` bytes -> {variable: array} (MATLAB header keys dropped), within ``max_bytes``.

    Raises :class:`LimitError` when the file declares or inflates to more than ``max_bytes``
    and :class:`InputError` naming ``name`` for anything unreadable.
    """
    import scipy.io

    check_mat(data, name, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on duplicate names, odd headers
            mat = scipy.io.loadmat(io.BytesIO(data))
    except NotImplementedError:
        raise InputError(f"{name}: MATLAB v7.3 (HDF5) .mat files are not supported; save with -v7") from None
    except Exception as exc:  # scipy raises many kinds (ValueError, TypeError, struct.error, ...) on junk
        raise _bad(name, f"{exc.__class__.__name__}: {exc}") from None
    return {k: v for k, v in mat.items() if not k.startswith("__")}


def read_mat_file(path: str | os.PathLike, max_bytes: int = MAX_MAT_BYTES) -> dict[str, np.ndarray]:
    """:func:`load_mat` of a file; the file itself may not be larger than ``max_bytes``."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise LimitError(f"{p}: .mat file of {size} bytes, more than the limit {max_bytes}")
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{p}: .mat file not found") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror or exc})") from None
    return load_mat(data, str(p), max_bytes)
