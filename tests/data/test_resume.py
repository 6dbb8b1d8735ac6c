"""Interrupt safety and sharding: kill -9 mid-build + resume == one build; shards merged == one build."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from prnet_keras.cli.build_dataset import main
from prnet_keras.data.build import build_hdf5, merge_hdf5
from prnet_keras.errors import InputError

# A build in a child process that SIGKILLs itself at a chosen point: after chunk K is
# committed ("after"), or halfway through writing chunk K's part file ("during").
_KILLER = textwrap.dedent("""
    import os, signal, sys
    import prnet_keras.data.build as b
    import prnet_keras.data.worker as w
    mode, k = sys.argv[1], int(sys.argv[2])
    orig_chunk, orig_append = w.build_chunk, w.append_rows
    current = [None]

    def chunk(task):
        current[0] = task[0]
        result = orig_chunk(task)
        if mode == "after" and task[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    def append(f, rows, skipped=()):
        half = len(rows) // 2
        orig_append(f, rows[:half], ())
        if mode == "during" and current[0] == k:
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        orig_append(f, rows[half:], skipped)

    w.build_chunk, w.append_rows = chunk, append
    b.build_hdf5(sys.argv[3], sys.argv[4], bfm=sys.argv[5], workers=1, commit_every=3, seed=3)
""")


@pytest.fixture(scope="module")
def reference_build(tiny_300wlp, tiny_bfm_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "train.hdf5"
    build_hdf5(tiny_300wlp, out, bfm=tiny_bfm_file, workers=1, commit_every=3, seed=3)
    return out


@pytest.mark.parametrize("mode", ["after", "during"])
def test_kill_9_then_resume_equals_uninterrupted(mode, tiny_300wlp, tiny_bfm_file, reference_build, tmp_path,
                                                 datagen):
    out = tmp_path / "train.hdf5"
    args = [sys.executable, "-c", _KILLER, mode, "2", str(tiny_300wlp), str(out), str(tiny_bfm_file)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr
    partial = out.with_name("train.hdf5.partial")
    assert not out.exists() and partial.is_dir()
    parts = sorted(p.name for p in partial.glob("part-*.h5"))
    assert parts == ["part-000000.h5", "part-000001.h5"] + (["part-000002.h5"] if mode == "after" else [])
    # Without --resume an unfinished build is not silently thrown away.
    with pytest.raises(InputError, match="--resume"):
        build_hdf5(tiny_300wlp, out, bfm=tiny_bfm_file, commit_every=3, seed=3)
    # Different settings cannot be mixed into it.
    with pytest.raises(InputError, match="seed"):
        build_hdf5(tiny_300wlp, out, bfm=tiny_bfm_file, commit_every=3, seed=4, resume=True)
    summary = build_hdf5(tiny_300wlp, out, bfm=tiny_bfm_file, workers=2, commit_every=3, seed=3, resume=True)
    assert summary.resumed_chunks == len(parts) and summary.written == 16
    assert not partial.exists()
    datagen.assert_same_hdf5(out, reference_build)


def test_shards_merged_equal_single_build(tiny_300wlp, tiny_bfm_file, reference_build, tmp_path, datagen):
    shards = []
    for i in (2, 0, 1):  # any order
        out = tmp_path / f"shard{i}.hdf5"
        code = main(["--source", str(tiny_300wlp), "--out", str(out), "--bfm", str(tiny_bfm_file), "--shard",
                     f"{i}/3", "--commit-every", "3", "--seed", "3", "--workers", "1", "--no-progress"])
        assert code == 0
        shards.append(out)
    merged = tmp_path / "merged.hdf5"
    assert main(["merge", *map(str, shards), "--out", str(merged)]) == 0
    datagen.assert_same_hdf5(merged, reference_build)
    with pytest.raises(InputError, match="shards 0..2"):
        merge_hdf5(shards[:2], tmp_path / "incomplete.hdf5")
    # A shard stored without compression cannot be spliced into gzip ones (chunks are copied as bytes).
    plain = tmp_path / "plain1.hdf5"
    assert main(["--source", str(tiny_300wlp), "--out", str(plain), "--bfm", str(tiny_bfm_file), "--shard", "1/3",
                 "--commit-every", "3", "--seed", "3", "--workers", "1", "--no-progress", "--compression", "none"]) == 0
    with pytest.raises(InputError, match="compression 'none' differs"):
        merge_hdf5([shards[1], plain, shards[0]], tmp_path / "mixed.hdf5")
    assert not (tmp_path / "mixed.hdf5").exists()


def test_shard_slices_partition_in_order():
    from hypothesis import given, strategies as st

    from prnet_keras.data.build import parse_shard, shard_slice

    @given(st.integers(0, 500), st.integers(1, 17))
    def check(n_items, n_shards):
        items = list(range(n_items))
        joined = [x for i in range(n_shards) for x in items[shard_slice(n_items, parse_shard(f"{i}/{n_shards}"))]]
        assert joined == items

    check()
    for bad in ("2/2", "-1/3", "a/b", "1"):
        with pytest.raises(InputError, match="--shard"):
            parse_shard(bad)
