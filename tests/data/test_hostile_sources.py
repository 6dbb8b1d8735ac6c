"""Hostile dataset sources: zip members that lie about their size, inflate like bombs, or
name paths outside the archive; .mat files declaring huge arrays. Each is a skipped row with
its reason, nothing is allocated for it and nothing is written outside the output."""

from __future__ import annotations

import csv
import io
import struct
import zipfile
import zlib

import numpy as np
import pytest
import scipy.io

from prnet_keras.data.build import build_hdf5
from prnet_keras.data.hdf5 import PositionMapDataset
from prnet_keras.matfile import load_mat
from prnet_keras.data.sources import list_samples, read_member, unsafe_member_name
from prnet_keras.errors import InputError, LimitError


def _fake_declared_size(path, member: str, size: int) -> None:
    """Rewrite the uncompressed size a zip declares for ``member`` (local and central headers)."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    for sig, size_off, name_off in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        pos = 0
        while (pos := data.find(sig, pos)) >= 0:
            if data[pos + name_off:pos + name_off + len(name)] == name:
                struct.pack_into("<I", data, pos + size_off, size)
            pos += 4
    path.write_bytes(bytes(data))


def test_unsafe_member_names():
    assert unsafe_member_name("AFLW2000/image00001.jpg") is None
    assert unsafe_member_name("../../evil.jpg") and unsafe_member_name("a/../../b.jpg")
    assert unsafe_member_name("/abs/x.jpg") and unsafe_member_name("C:/x.jpg") and unsafe_member_name("..\\x.jpg")


def test_hostile_zip_members_become_skipped_rows(tiny_aflw, tiny_model, tmp_path):
    z = tmp_path / "in" / "AFLW2000-3D.zip"
    z.parent.mkdir()
    good = sorted(p for p in tiny_aflw.iterdir() if p.stem in ("image00001", "image00002"))
    jpg, mat = (tiny_aflw / "image00003.jpg").read_bytes(), (tiny_aflw / "image00003.mat").read_bytes()
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in good:
            zf.write(p, f"AFLW2000/{p.name}")
        zf.writestr("../../evil.jpg", jpg)
        zf.writestr("../../evil.mat", mat)
        zf.writestr("/abs/x.jpg", jpg)
        zf.writestr("AFLW2000/image00004.jpg", jpg)
        zf.writestr("AFLW2000/image00004.mat", mat)  # declares 2 GiB below
        zf.writestr("AFLW2000/image00005.jpg", jpg)
        zf.writestr("AFLW2000/image00005.mat", b"\0" * (16 << 20))  # inflates > 200:1
        zf.writestr("AFLW2000/image00006.jpg", b"\xff" * 100)
        zf.writestr("AFLW2000/image00006.mat", mat)
    _fake_declared_size(z, "AFLW2000/image00004.mat", 2**31)

    refs = {r.name: r for r in list_samples(z, layout="aflw2000")}
    assert refs["../../evil"].problem and refs["/abs/x"].problem
    with pytest.raises(LimitError, match="declares 2147483648 bytes"):
        read_member(str(z.resolve()), "AFLW2000/image00004.mat", 32 << 20)

    out = tmp_path / "out" / "val.hdf5"
    summary = build_hdf5(z, out, layout="aflw2000", model=tiny_model, buildmode="val")
    assert summary.written == 2 and summary.skipped == 6
    assert PositionMapDataset(out).names == ["image00001", "image00002"]
    rows = {r["name"]: r["reason"] for r in csv.DictReader(open(out.with_name("val.skipped.csv")))}
    assert set(rows) == {"../../evil", "../../evil.mat", "/abs/x", "image00004", "image00005", "image00006"}
    assert "leaves the archive" in rows["../../evil"] and "leaves the archive" in rows["../../evil.mat"]
    assert "absolute path" in rows["/abs/x"]
    assert "declares 2147483648 bytes" in rows["image00004"]
    assert "inflates" in rows["image00005"] and "zip bomb" in rows["image00005"]
    assert "cannot decode image" in rows["image00006"]
    # nothing was extracted anywhere: the output folder holds the file and its skipped list only
    assert sorted(p.name for p in out.parent.iterdir()) == ["val.hdf5", "val.skipped.csv"]
    assert sorted(p.name for p in z.parent.iterdir()) == ["AFLW2000-3D.zip"]
    assert not (tmp_path / "evil.jpg").exists() and not (tmp_path.parent / "evil.jpg").exists()


def _mat_v5_header() -> bytes:
    return b"MATLAB 5.0 MAT-file".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"


def _element(kind: int, payload: bytes) -> bytes:
    return struct.pack("<II", kind, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def _matrix(cls: int, dims: list[int], body: bytes = b"") -> bytes:
    head = (_element(6, struct.pack("<II", cls, 0)) + _element(5, struct.pack(f"<{len(dims)}i", *dims))
            + _element(1, b"x"))
    return _element(14, head + body)


@pytest.mark.parametrize("data, match", [
    # compressed double array of 12,500 x 10,000 (1 GB) in a few hundred bytes
    (_mat_v5_header() + _element(15, zlib.compress(_matrix(6, [12_500, 10_000], _element(9, b"\0" * 64)))),
     "12500x10000"),
    # a cell array declaring 10^10 elements with no contents (scipy would allocate them first)
    (_mat_v5_header() + _matrix(1, [100_000, 100_000]), "100000x100000"),
])
def test_mat_declared_sizes_are_checked_before_allocation(data, match):
    with pytest.raises(LimitError, match=match):
        load_mat(data, "bomb.mat")


def test_mat_inflation_budget_and_round_trip():
    payload = b"".join(_matrix(6, [1000, 1000], _element(9, b"\0" * 8_000_000)) for _ in range(3))
    with pytest.raises(LimitError, match="inflates to more than"):
        load_mat(_mat_v5_header() + _element(15, zlib.compress(payload)), "z.mat", max_bytes=16 << 20)
    buf = io.BytesIO()
    arrays = {"a": np.arange(6.0).reshape(2, 3), "s": "text", "c": np.array([np.eye(2), "x"], dtype=object),
              "st": {"f": np.ones(3)}}
    for compress in (False, True):
        buf = io.BytesIO()
        scipy.io.savemat(buf, arrays, do_compression=compress)
        back = load_mat(buf.getvalue(), "ok.mat")
        np.testing.assert_array_equal(back["a"], arrays["a"])
    with pytest.raises(InputError, match="v7.3"):
        load_mat(_mat_v5_header()[:124] + struct.pack("<H", 0x0200) + b"IM" + b"\0" * 64, "h5.mat")
