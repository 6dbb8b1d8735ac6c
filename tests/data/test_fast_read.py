"""The fast row reads (direct chunk read + libdeflate inflate or plain chunks + OpenCV unshuffle/convert,
JPEG crops through simplejpeg) equal h5py and OpenCV bit for bit."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import pytest

from prnet_keras.data.build import build_hdf5
from prnet_keras.data.chunks import fast_chunks, read_chunk_into
from prnet_keras.data.hdf5 import PositionMapDataset


def _bits(batch: dict) -> dict:
    return {k: (v if k == "name" else np.ascontiguousarray(v).view(np.uint8)) for k, v in batch.items()}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    bits_a, bits_b = _bits(a), _bits(b)
    for k, va in a.items():
        if k == "name":
            assert va == b[k]
        else:
            assert va.dtype == b[k].dtype and va.shape == b[k].shape, k
            np.testing.assert_array_equal(bits_a[k], bits_b[k], err_msg=k)


VARIANTS = [("jpeg", "gzip"), ("raw", "gzip"), ("jpeg", "none"), ("raw", "none")]


@pytest.fixture(scope="module")
def crops_files(tiny_300wlp, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("fastread")
    return {(cf, comp): build_hdf5(tiny_300wlp, out / f"{cf}-{comp}.hdf5", model=tiny_model, seed=7,
                                   crop_format=cf, compression=comp).out
            for cf, comp in VARIANTS}


@pytest.mark.parametrize("variant", VARIANTS, ids=["-".join(v) for v in VARIANTS])
def test_fast_path_equals_h5py(crops_files, variant):
    path = crops_files[variant]
    fast, slow = PositionMapDataset(path), PositionMapDataset(path)
    slow._fast_read = False
    idx = [3, 0, 15, 3, 7, 7, 1, 12]
    _assert_same(fast.read_batch(idx), slow.read_batch(idx))
    _assert_same(fast.read_batch(np.arange(len(fast))), slow.read_batch(np.arange(len(slow))))
    crop_format, compression = variant
    chunk_mode = {"gzip": "deflate", "none": "plain"}[compression]
    assert fast.read_modes() == [("jpeg" if crop_format == "jpeg" else chunk_mode, chunk_mode)]
    assert slow.read_modes() == [("jpeg" if crop_format == "jpeg" else "h5py", "h5py")]
    assert fast.attrs["compression"] == compression


def test_uncompressed_build_stores_the_same_samples(crops_files):
    """--compression none changes the bytes on disk, not one value read back."""
    for crop_format in ("jpeg", "raw"):
        gz, plain = crops_files[(crop_format, "gzip")], crops_files[(crop_format, "none")]
        with h5py.File(gz) as a, h5py.File(plain) as b:
            assert a["position_map"].compression == "gzip" and b["position_map"].compression is None
            assert b["position_map"].chunks == (1,) + b["position_map"].shape[1:]
        n = len(PositionMapDataset(gz))
        _assert_same(PositionMapDataset(gz).read_batch(np.arange(n)),
                     PositionMapDataset(plain).read_batch(np.arange(n)))


def test_training_read_skips_metadata(crops_files):
    ds = PositionMapDataset(crops_files[("jpeg", "none")])
    full, arrays = ds.read_batch([4, 1]), ds.read_batch([4, 1], meta=False)
    assert set(arrays) == {"image", "position_map"}
    _assert_same(arrays, {k: full[k] for k in arrays})


def test_concurrent_thread_reads_equal_serial_reads(crops_files):
    """Worker threads (PyDataset workers) read at once: h5py < 3.15 does not lock direct
    chunk reads itself, and unlocked concurrent reads failed in H5Dread_chunk here."""
    for variant in VARIANTS:
        ds = PositionMapDataset(crops_files[variant])
        rng = np.random.default_rng(0)
        batches = [rng.integers(0, len(ds), 8) for _ in range(48)]
        serial = [ds.read_batch(b, meta=False) for b in batches]
        with ThreadPoolExecutor(4) as pool:
            threaded = list(pool.map(lambda b, ds=ds: ds.read_batch(b, meta=False), batches))
        for a, b in zip(serial, threaded):
            _assert_same(a, b)


def test_unfiltered_foreign_file_reads_plain(crops_files, tmp_path):
    src = crops_files[("jpeg", "gzip")]
    dst = tmp_path / "plain.hdf5"
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        data = f["position_map"][:]
        del f["position_map"]
        f.create_dataset("position_map", data=data, chunks=(1,) + data.shape[1:])  # no filters
        assert fast_chunks(f["position_map"]) == "plain"
        f.create_dataset("other", data=data[:, :4], chunks=(1, 4, 256, 3), fletcher32=True)
        assert fast_chunks(f["other"]) is None  # a filter the fast path does not know
    ds = PositionMapDataset(dst)
    ref = PositionMapDataset(src)
    ref._fast_read = False
    idx = np.arange(len(ds))[::-1]
    _assert_same(ds.read_batch(idx), ref.read_batch(idx))
    assert ds.read_modes() == [("jpeg", "plain")]


def test_read_chunk_into_special_values_and_bad_chunk(tmp_path):
    rng = np.random.default_rng(0)
    special = np.array([0x0000, 0x8000, 0x0001, 0x83FF, 0x7BFF, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFD55],
                       np.uint16).view(np.float16)
    rows = [rng.normal(0, 100, (8, 8, 3)).astype(np.float16) for _ in range(3)]
    rows[1].reshape(-1)[: special.size] = special  # inf, NaNs incl. signalling ones, subnormals, -0
    with h5py.File(tmp_path / "t.hdf5", "w") as f:
        d = f.create_dataset("m", data=np.stack(rows), chunks=(1, 8, 8, 3), shuffle=True, compression="gzip")
        assert fast_chunks(d)
        for j in range(3):
            out = np.empty((8, 8, 3), np.float32)
            read_chunk_into(d, j, out)
            np.testing.assert_array_equal(out.view(np.uint32), d[j].astype(np.float32).view(np.uint32))
        # a chunk that is no zlib stream: h5py's own path and error
        d.id.write_direct_chunk((2, 0, 0, 0), b"not deflate", 0)
        with pytest.raises(OSError):
            read_chunk_into(d, 2, np.empty((8, 8, 3), np.float32))
        g = f.create_dataset("g", data=np.stack(rows), chunks=(1, 8, 8, 3), compression="gzip")  # no shuffle
        assert not fast_chunks(g)
        assert not fast_chunks(f.create_dataset("h", data=np.stack(rows), chunks=(1, 4, 8, 3), shuffle=True,
                                                 compression="gzip"))


@pytest.mark.parametrize("decoder", ["simplejpeg", "opencv"])
def test_stored_jpeg_crops_decode_like_opencv(crops_files, decoder, monkeypatch):
    """Both crop decoders give OpenCV's RGB pixels (into the caller's array too); a truncated or
    garbage JPEG is an InputError, so a training sample is skipped rather than learnt half decoded."""
    import cv2

    from prnet_keras.data import chunks as hdf5
    from prnet_keras.errors import InputError

    if decoder == "opencv":
        monkeypatch.setattr(hdf5, "simplejpeg", None)
    else:
        assert hdf5.simplejpeg is not None, "simplejpeg is a dependency"
    with h5py.File(crops_files[("jpeg", "gzip")]) as f:
        stored = [f["crop"][i] for i in range(3)]
    for value in stored:
        want = cv2.cvtColor(cv2.imdecode(value, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(hdf5.decode_crop(value), want)
        out = np.zeros_like(want)
        assert hdf5.decode_crop(value, out=out) is out
        np.testing.assert_array_equal(out, want)
    bad = [np.frombuffer(b"\xff\xd8\xff\xe0 not a jpeg", np.uint8)]
    if decoder == "simplejpeg":  # OpenCV decodes a cut-off JPEG with a grey bottom and no error
        bad.append(stored[0][: stored[0].size // 2])
    for value in bad:
        with pytest.raises(InputError, match="do not decode"):
            hdf5.decode_crop(value)
