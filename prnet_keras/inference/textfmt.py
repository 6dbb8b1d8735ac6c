"""Fast fixed-point text formatting of numeric rows (OBJ/TXT writers) with numba.

Python's %-formatting costs ~1.5 µs per number: 150-200 ms for one 44k-vertex OBJ. These
kernels write the ASCII bytes directly (~50x faster). Output matches ``"%.{d}f"`` /
``"%d"`` except that halfway cases round half away from zero and -0.0 prints as 0.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_MAX_ABS = 1e12  # beyond this (or non-finite) the Python fallback formats the rows


@njit(cache=True, nogil=True)
def _write_uint(out, pos, value):
    if value == 0:
        out[pos] = 48
        return pos + 1
    start = pos
    while value > 0:
        out[pos] = 48 + value % 10
        value //= 10
        pos += 1
    # digits were written least-significant first: reverse them in place
    i, j = start, pos - 1
    while i < j:
        out[i], out[j] = out[j], out[i]
        i += 1
        j -= 1
    return pos


@njit(cache=True, nogil=True)
def _format_float_rows(values, prefix, seps, decimals, out):
    scale = 10.0**decimals
    tmp = np.empty(40, np.uint8)
    pos = 0
    for i in range(values.shape[0]):
        for c in prefix:
            out[pos] = c
            pos += 1
        for j in range(values.shape[1]):
            out[pos] = seps[j]
            pos += 1
            v = values[i, j]
            r = np.int64(abs(v) * scale + 0.5)  # truncation of a positive number = floor
            if v < 0 and r != 0:
                out[pos] = 45  # '-'
                pos += 1
            # digits least-significant first into tmp (fraction, '.', integer part), then reversed
            n = 0
            for _ in range(decimals):
                tmp[n] = 48 + r % 10
                r //= 10
                n += 1
            if decimals > 0:
                tmp[n] = 46  # '.'
                n += 1
            while True:
                tmp[n] = 48 + r % 10
                r //= 10
                n += 1
                if r == 0:
                    break
            for q in range(n - 1, -1, -1):
                out[pos] = tmp[q]
                pos += 1
        out[pos] = 10
        pos += 1
    return pos


@njit(cache=True, nogil=True)
def _format_int_rows(values, prefix, seps, out):
    pos = 0
    for i in range(values.shape[0]):
        for c in prefix:
            out[pos] = c
            pos += 1
        for j in range(values.shape[1]):
            out[pos] = seps[j]
            pos += 1
            v = values[i, j]
            if v < 0:
                out[pos] = 45
                pos += 1
                v = -v
            pos = _write_uint(out, pos, v)
        out[pos] = 10
        pos += 1
    return pos


def _bytes(s: str) -> np.ndarray:
    return np.frombuffer(s.encode("ascii"), np.uint8).copy()


def format_rows(values: np.ndarray, prefix: str = "", decimals: int | None = 4, seps: str | None = None) -> str:
    """Rows of ``values`` (n, k) as text lines: ``prefix`` then each value preceded by its
    separator (``seps``, default all spaces; a leading space after an empty prefix is dropped).

    decimals=None formats integers (``%d``); else fixed point (``%.{decimals}f``).
    """
    return format_rows_ascii(values, prefix, decimals, seps).decode("ascii")


def format_rows_ascii(values: np.ndarray, prefix: str = "", decimals: int | None = 4,
                      seps: str | None = None) -> bytes:
    """:func:`format_rows` as ASCII bytes (what files take: no decode and encode of megabytes)."""
    a = np.asarray(values)
    if a.ndim == 1:
        a = a[:, None]
    n, k = a.shape
    if n == 0:
        return b""
    sep = seps if seps is not None else " " * k
    if len(sep) != k:
        raise ValueError(f"seps: expected {k} separators, got {len(sep)}")
    if not prefix and seps is None:
        sep = "\x00" + sep[1:]  # marker: no separator before the first value
    pre, sp = _bytes(prefix), _bytes(sep)
    if decimals is None:
        ints = np.ascontiguousarray(a, np.int64)
        out = np.empty(n * (len(pre) + k * 21 + 1), np.uint8)
        end = _format_int_rows(ints, pre, sp, out)
    else:
        f = np.ascontiguousarray(a, np.float64)
        if not (np.all(np.isfinite(f)) and np.abs(f).max() < _MAX_ABS):
            fmt = prefix + "".join(s + f"%.{decimals}f" for s in sep.replace("\x00", "")) + "\n"
            return ((fmt * n) % tuple(f.ravel().tolist())).encode("ascii")
        out = np.empty(n * (len(pre) + k * (15 + decimals) + 1), np.uint8)
        end = _format_float_rows(f, pre, sp, int(decimals), out)
    text = out[:end].tobytes()
    if "\x00" in sep:
        text = text.replace(b"\x00", b"")
    return text
