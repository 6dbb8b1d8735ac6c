"""A PLY reader (ASCII, binary little- and big-endian) for the viewers: vertex properties and faces.

Counts the header declares are checked against the bytes that follow before any array is
made, so a short or hostile file is an :class:`InputError`, not a huge allocation.
"""

from __future__ import annotations

import numpy as np

from prnet_keras.errors import InputError

_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
          "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
          "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
_FACE_LISTS = ("vertex_indices", "vertex_index")
MAX_HEADER_BYTES = 1 << 16


class _Element:
    def __init__(self, name: str, count: int):
        self.name, self.count = name, count
        self.props: list[tuple[str, str, str | None]] = []  # (name, value type, list count type or None)

    @property
    def has_lists(self) -> bool:
        return any(p[2] is not None for p in self.props)


def _parse_header(data: bytes, name: str) -> tuple[str | None, list[_Element], int]:
    if not data.startswith(b"ply"):
        raise InputError(f"{name}: not a PLY file (it does not start with 'ply')")
    end = data.find(b"end_header", 0, MAX_HEADER_BYTES)
    if end < 0:
        raise InputError(f"{name}: no 'end_header' in the first {MAX_HEADER_BYTES} bytes")
    body = data.find(b"\n", end)
    body = len(data) if body < 0 else body + 1
    fmt, elements = "", []
    for line in data[:end].decode("ascii", errors="replace").splitlines()[1:]:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        try:
            if parts[0] == "format":
                fmt = parts[1]
            elif parts[0] == "element":
                count = int(parts[2])
                if count < 0:
                    raise ValueError(count)
                elements.append(_Element(parts[1], count))
            elif parts[0] == "property" and parts[1] == "list":
                elements[-1].props.append((parts[4], _TYPES[parts[3]], _TYPES[parts[2]]))
            elif parts[0] == "property":
                elements[-1].props.append((parts[2], _TYPES[parts[1]], None))
            else:
                raise ValueError(parts[0])
        except (IndexError, KeyError, ValueError):
            raise InputError(f"{name}: bad PLY header line {line.strip()!r}") from None
    if fmt not in _FORMATS:
        raise InputError(f"{name}: unknown PLY format {fmt!r}; expected one of {', '.join(_FORMATS)}")
    return _FORMATS[fmt], elements, body


def _fans(polygons: list[np.ndarray]) -> np.ndarray:
    tri = [np.stack([np.full(len(p) - 2, p[0]), p[1:-1], p[2:]], 1) for p in polygons if len(p) >= 3]
    return np.concatenate(tri).astype(np.int64) if tri else np.zeros((0, 3), np.int64)


def _binary_element(data: bytes, offset: int, el: _Element, endian: str,
                    name: str) -> tuple[dict, np.ndarray | None, int]:
    left = len(data) - offset
    scalar_bytes = sum(np.dtype(t).itemsize for _, t, ct in el.props if ct is None)
    least = el.count * (scalar_bytes + sum(np.dtype(ct).itemsize for _, _, ct in el.props if ct is not None))
    if least > left:
        raise InputError(f"{name}: declares {el.count} {el.name} element(s), at least {least} bytes, "
                         f"but only {left} bytes follow the header")
    if not el.has_lists:
        dtype = np.dtype([(p, endian + t) for p, t, _ in el.props])
        rows = np.frombuffer(data, dtype, el.count, offset)
        return {p: rows[p] for p, _, _ in el.props}, None, offset + el.count * dtype.itemsize
    props = el.props
    if len(props) == 1 and props[0][0] in _FACE_LISTS:  # fast path: every face a triangle
        _, t, ct = props[0]
        dtype = np.dtype([("n", endian + ct), ("i", endian + t, (3,))])
        if el.count * dtype.itemsize <= left:
            rows = np.frombuffer(data, dtype, el.count, offset)
            if np.all(rows["n"] == 3):
                return {}, rows["i"].astype(np.int64), offset + el.count * dtype.itemsize
    polygons: list[np.ndarray] = []
    for _ in range(el.count):  # general case: lists of any length, other properties skipped
        for p, t, ct in props:
            if ct is None:
                offset += np.dtype(t).itemsize
                continue
            csize, isize = np.dtype(ct).itemsize, np.dtype(t).itemsize
            if offset + csize > len(data):
                raise InputError(f"{name}: the {el.name} data end early")
            n = int(np.frombuffer(data, endian + ct, 1, offset)[0])
            offset += csize
            if n < 0 or offset + n * isize > len(data):
                raise InputError(f"{name}: a {el.name} list of {n} entries runs past the end of the file")
            if p in _FACE_LISTS:
                polygons.append(np.frombuffer(data, endian + t, n, offset).astype(np.int64))
            offset += n * isize
    return {}, _fans(polygons) if any(p in _FACE_LISTS for p, _, _ in props) else None, offset


def _ascii_element(lines: list[str], start: int, el: _Element, name: str) -> tuple[dict, np.ndarray | None, int]:
    if el.count > len(lines) - start:
        raise InputError(f"{name}: declares {el.count} {el.name} element(s) but only {len(lines) - start} lines follow")
    rows = lines[start:start + el.count]
    try:
        if not el.has_lists:
            table = np.asarray(" ".join(rows).split(), np.float64)
            if table.size != el.count * len(el.props):
                raise ValueError(f"expected {len(el.props)} values per {el.name} line")
            table = table.reshape(el.count, len(el.props))
            return {p: table[:, k].astype(t) for k, (p, t, _) in enumerate(el.props)}, None, start + el.count
        polygons = []
        for row in rows:
            values = row.split()
            pos = 0
            for p, _, ct in el.props:
                if ct is None:
                    pos += 1
                    continue
                n = int(values[pos])
                if p in _FACE_LISTS:
                    polygons.append(np.asarray(values[pos + 1:pos + 1 + n], np.int64))
                pos += 1 + n
    except (ValueError, IndexError) as exc:
        raise InputError(f"{name}: bad {el.name} data in an ASCII PLY ({exc})") from None
    return {}, _fans(polygons) if any(p in _FACE_LISTS for p, _, _ in el.props) else None, start + el.count


def read_ply_arrays(data: bytes, name: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """PLY bytes -> (vertex properties by name, (T, 3) int64 triangles or None; polygons as fans)."""
    endian, elements, offset = _parse_header(data, name)
    vertex, faces = None, None
    lines = data[offset:].decode("ascii", errors="replace").splitlines() if endian is None else []
    pos = 0 if endian is None else offset
    for el in elements:
        if endian is None:
            values, tri, pos = _ascii_element(lines, pos, el, name)
        else:
            values, tri, pos = _binary_element(data, pos, el, endian, name)
        if el.name == "vertex":
            vertex = values
        elif el.name == "face":
            faces = tri
    if vertex is None or not all(k in vertex for k in ("x", "y", "z")):
        raise InputError(f"{name}: no vertex element with x, y, z properties")
    return vertex, faces
