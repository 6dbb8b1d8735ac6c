"""Yaw binning, balanced mean, CED values, CSV round trip (torn lines), Markdown, plots."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prnet_keras.errors import InputError
from prnet_keras.evaluate import report


def test_yaw_bins_edges_and_sign():
    yaw = np.array([0.0, -30.0, 30.0001, 45.0, -60.0, 60.5, 90.0, 97.0, np.nan])
    np.testing.assert_array_equal(report.yaw_bin_index(yaw), [0, 0, 1, 1, 1, 2, 2, 2, -1])
    assert report.bin_labels(report.DEFAULT_YAW_BINS) == ["[0,30]", "(30,60]", "(60,90]"]


def test_summary_balanced_mean_differs_from_mean_all():
    # 3 frontal images at 1 %, 1 half-profile at 4 %, 1 profile at 7 %, 1 unscorable
    values = np.array([1.0, 1.0, 1.0, 4.0, 7.0, np.nan])
    yaw = np.array([5.0, -10.0, 29.0, 40.0, -80.0, 10.0])
    s = report.summarize(values, yaw)
    assert s["bins"]["[0,30]"] == {"mean": 1.0, "count": 3}
    assert s["bins"]["(30,60]"] == {"mean": 4.0, "count": 1}
    assert s["bins"]["(60,90]"] == {"mean": 7.0, "count": 1}
    assert s["balanced_mean"] == pytest.approx(4.0)
    assert s["mean_all"] == pytest.approx(14.0 / 5)
    assert s["median"] == pytest.approx(1.0)
    assert (s["count"], s["excluded"]) == (5, 1)


def test_summary_empty_bin_is_skipped_in_balanced_mean():
    s = report.summarize(np.array([2.0, 4.0]), np.array([10.0, 70.0]))
    assert s["bins"]["(30,60]"] == {"mean": None, "count": 0}
    assert s["balanced_mean"] == pytest.approx(3.0)


def test_ced_values():
    v = np.array([0.5, 1.0, 2.0, 8.0, np.nan])
    np.testing.assert_allclose(report.ced(v, [0.0, 0.5, 0.99, 1.0, 5.0, 10.0]), [0, 0.25, 0.25, 0.5, 0.75, 1.0])
    assert report.ced(np.array([np.nan]), [1.0]).tolist() == [0.0]


def test_csv_round_trip_append_and_torn_line(tmp_path):
    metrics = ["sparse_2d", "dense_3d"]
    p = tmp_path / "per_image.csv"
    rows = [{"name": "a", "yaw": 10.0, "sparse_2d": 1.5, "dense_3d": math.nan, "error": ""},
            {"name": "b,c", "yaw": math.nan, "error": "unreadable: truncated JPEG"}]
    report.write_csv(p, rows[:1], metrics)
    report.append_rows(p, rows[1:], metrics)
    with open(p, "a") as f:
        f.write("d,3.0,1.0")  # a crash mid-append: no newline
    got_metrics, got = report.read_csv(p)
    assert got_metrics == metrics
    assert [r["name"] for r in got] == ["a", "b,c"]
    assert got[0]["sparse_2d"] == 1.5 and math.isnan(got[0]["dense_3d"])
    assert got[1]["error"].startswith("unreadable") and math.isnan(got[1]["sparse_2d"])
    (tmp_path / "bad.csv").write_text("x,y\n")
    with pytest.raises(InputError, match="bad.csv"):
        report.read_csv(tmp_path / "bad.csv")


def _summary():
    yaw = np.array([5.0, 45.0, 75.0])
    s = {m: report.summarize(np.array([1.0, 2.0, 3.0]), yaw) for m in ("sparse_2d", "reconstruction_3d")}
    settings = {"yaw_bin_labels": report.bin_labels(report.DEFAULT_YAW_BINS), "normalizer": "bbox",
                "recon_normalizer": "interocular", "shiftZ_description": "min", "icp": "scipy"}
    return {"metrics": s, "settings": settings, "failed": []}


def test_markdown_has_paper_numbers_and_compare_column():
    md = report.markdown_table(_summary(), {"baseline": {"metrics": {"sparse_2d": {"balanced_mean": 9.5}}}})
    lines = md.splitlines()
    assert "PRNet paper mean" in lines[0] and "baseline mean" in lines[0]
    sparse = next(ln for ln in lines if ln.startswith("| Sparse 2D"))
    assert "| 1.00 | 2.00 | 3.00 | 2.00 | 2.00 |" in sparse
    assert "3.62 (2.75 / 3.51 / 4.61)" in sparse and "3.27" in sparse and "9.50" in sparse
    recon = next(ln for ln in lines if ln.startswith("| Reconstruction 3D"))
    assert "3.96" in recon


def test_plots_written(tmp_path):
    rng = np.random.default_rng(0)
    runs = {"this run": {"sparse_2d": rng.uniform(0, 8, 20)}, "old": {"sparse_2d": rng.uniform(0, 9, 20)}}
    paths = report.plot_ced(tmp_path, runs, ["sparse_2d"])
    assert [p.name for p in paths] == ["ced_sparse_2d.png", "ced_all.png"]
    item = {"name": "x", "value": 3.0, "crop": np.zeros((64, 64, 3), np.uint8),
            "gt_kpt": rng.uniform(0, 64, (68, 2)), "pred_kpt": rng.uniform(0, 64, (68, 2))}
    g = report.plot_gallery(tmp_path / "worst.png", [item, item], "sparse_2d")
    for p in [*paths, g]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
