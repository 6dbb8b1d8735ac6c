"""Summaries (yaw bins, balanced mean), CED curves, per-image CSV and the Markdown table.

Per-image values are NME in percent; NaN marks an image that could not be scored (it is
excluded from every mean, median, count and CED — never counted as 0).
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from prnet_keras.errors import InputError
from prnet_keras.utils import atomic_path, atomic_write_text

# Index order of --evalidxs (PRNet-keras numbering).
METRICS = ("sparse_2d", "sparse_3d", "dense_2d", "dense_3d", "reconstruction_2d", "reconstruction_3d")
METRIC_TITLES = {
    "sparse_2d": "Sparse 2D (68 landmarks)",
    "sparse_3d": "Sparse 3D (68 landmarks)",
    "dense_2d": "Dense 2D",
    "dense_3d": "Dense 3D",
    "reconstruction_2d": "Reconstruction 2D (ICP)",
    "reconstruction_3d": "Reconstruction 3D (ICP)",
}
# PRNet paper (Feng et al. 2018) on AFLW2000-3D, NME %; bins are |yaw| [0,30], (30,60], (60,90].
PAPER_PRNET: dict[str, dict[str, Any]] = {
    "sparse_2d": {"bins": [2.75, 3.51, 4.61], "balanced_mean": 3.62, "mean_all": 3.27},
    "sparse_3d": {"balanced_mean": 4.70},
    "dense_2d": {"balanced_mean": 3.18},
    "dense_3d": {"balanced_mean": 4.41},
    "reconstruction_3d": {"balanced_mean": 3.96},
}
DEFAULT_YAW_BINS = (0.0, 30.0, 60.0, 90.0)


def bin_labels(edges: Sequence[float]) -> list[str]:
    """['[0,30]', '(30,60]', '(60,90]'] for edges (0, 30, 60, 90)."""
    return [("[" if i == 0 else "(") + f"{edges[i]:g},{edges[i + 1]:g}]" for i in range(len(edges) - 1)]


def yaw_bin_index(yaw_deg: np.ndarray, edges: Sequence[float] = DEFAULT_YAW_BINS) -> np.ndarray:
    """(n,) bin index of |yaw| (degrees): [e0,e1] -> 0, (e1,e2] -> 1, ...; beyond the last edge
    goes to the last bin (AFLW2000-3D fits have a few |yaw| slightly above 90°); NaN -> -1."""
    a = np.abs(np.asarray(yaw_deg, np.float64))
    idx = np.searchsorted(np.asarray(edges[1:-1], np.float64), a, side="left")
    return np.where(np.isfinite(a), idx, -1)


def summarize(values: np.ndarray, yaw_deg: np.ndarray, edges: Sequence[float] = DEFAULT_YAW_BINS) -> dict[str, Any]:
    """Summary of one metric over images: values (n,) NME %, yaw_deg (n,).

    mean_all (all valid images), bins {label: {mean, count}}, balanced_mean (mean of the
    non-empty bins' means — what papers call "mean"), median, count (valid), excluded (NaN).
    """
    v = np.asarray(values, np.float64)
    ok = np.isfinite(v)
    idx = yaw_bin_index(yaw_deg, edges)
    bins: dict[str, dict[str, Any]] = {}
    means = []
    for b, label in enumerate(bin_labels(edges)):
        sel = ok & (idx == b)
        m = float(v[sel].mean()) if sel.any() else None
        bins[label] = {"mean": m, "count": int(sel.sum())}
        if m is not None:
            means.append(m)
    return {
        "mean_all": float(v[ok].mean()) if ok.any() else None,
        "bins": bins,
        "balanced_mean": float(np.mean(means)) if means else None,
        "median": float(np.median(v[ok])) if ok.any() else None,
        "count": int(ok.sum()),
        "excluded": int((~ok).sum()),
    }


def ced(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Cumulative error distribution: fraction of valid images with NME <= each threshold."""
    v = np.sort(np.asarray(values, np.float64)[np.isfinite(values)])
    if v.size == 0:
        return np.zeros(len(thresholds))
    return np.searchsorted(v, np.asarray(thresholds, np.float64), side="right") / v.size


# ---- per-image CSV ---------------------------------------------------------------------
def csv_header(metrics: Sequence[str]) -> list[str]:
    return ["name", "yaw", *metrics, "error"]


def format_rows(rows: Iterable[dict[str, Any]], metrics: Sequence[str]) -> str:
    """CSV text of per-image rows {name, yaw, <metric>: float, error: str}; NaN -> empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for r in rows:
        vals = [r.get(m, math.nan) for m in metrics]
        w.writerow([r["name"], _fmt(r.get("yaw")), *(_fmt(x) for x in vals), r.get("error", "") or ""])
    return buf.getvalue()


def _fmt(x: Any) -> str:
    if x is None:
        return ""
    x = float(x)
    return "" if not math.isfinite(x) else f"{x:.6g}"


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> None:
    """Write the whole per-image CSV atomically."""
    text = ",".join(csv_header(metrics)) + "\n" + format_rows(rows, metrics)
    atomic_write_text(path, text)


def append_rows(path: str | os.PathLike, rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> None:
    """Append rows with one O_APPEND write + fsync: a crash leaves at most a torn last line,
    which :func:`read_csv` drops (so --resume redoes that batch, never half of it)."""
    data = format_rows(rows, metrics).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_csv(path: str | os.PathLike) -> tuple[list[str], list[dict[str, Any]]]:
    """Read a per-image CSV -> (metric names, rows). Torn or malformed lines are dropped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: per-image results not found") from None
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # drop a torn last line
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or header[:2] != ["name", "yaw"] or header[-1] != "error":
        raise InputError(f"{path}: not a per-image results CSV (expected header name,yaw,...,error)")
    metrics = header[2:-1]
    rows = []
    for rec in reader:
        if len(rec) != len(header):
            continue
        try:
            row: dict[str, Any] = {"name": rec[0], "yaw": float(rec[1]) if rec[1] else math.nan, "error": rec[-1]}
            for m, s in zip(metrics, rec[2:-1]):
                row[m] = float(s) if s else math.nan
        except ValueError:
            continue
        rows.append(row)
    return metrics, rows


# ---- Markdown ----------------------------------------------------------------------------
def _cell(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.2f}"


def markdown_table(summary: dict[str, Any], compare: dict[str, dict[str, Any]] | None = None) -> str:
    """Markdown: our per-bin / balanced / all-image means beside the PRNet paper's numbers."""
    metrics = summary["metrics"]
    labels = summary["settings"]["yaw_bin_labels"]
    compare = compare or {}
    head = ["metric", *(f"ours {lb}" for lb in labels), "ours mean", "ours all", "median", "n",
            "PRNet paper mean", "PRNet paper all", *(f"{name} mean" for name in compare)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, s in metrics.items():
        paper = PAPER_PRNET.get(m, {})
        pbins = paper.get("bins")
        paper_mean = _cell(paper.get("balanced_mean"))
        if pbins:
            paper_mean += " (" + " / ".join(f"{b:.2f}" for b in pbins) + ")"
        row = [METRIC_TITLES.get(m, m), *(_cell(s["bins"][lb]["mean"]) for lb in labels),
               _cell(s["balanced_mean"]), _cell(s["mean_all"]), _cell(s["median"]), str(s["count"]),
               paper_mean, _cell(paper.get("mean_all"))]
        row += [_cell(c["metrics"].get(m, {}).get("balanced_mean")) for c in compare.values()]
        lines.append("| " + " | ".join(row) + " |")
    st = summary["settings"]
    notes = [
        "",
        f"NME in %. Alignment normaliser: {st['normalizer']}; reconstruction normaliser: {st['recon_normalizer']}; "
        f"z alignment for 3D metrics: {st['shiftZ_description']}; ICP: {st['icp']}.",
        "'mean' is the balanced mean of the yaw-bin means (the papers' 'mean'); 'all' is the mean over all images.",
        "PRNet paper numbers: AFLW2000-3D, Feng et al. 2018 (sparse 2D per bin in brackets; reconstruction is 3D).",
    ]
    if summary.get("failed"):
        notes.append(f"{len(summary['failed'])} image(s) could not be scored and are excluded (see summary.json).")
    notes += [f"Warning: {w}" for w in summary.get("warnings", [])]
    return "\n".join(lines + notes) + "\n"


# ---- plots -------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def plot_ced(
    out_dir: str | os.PathLike,
    runs: dict[str, dict[str, np.ndarray]],
    metrics: Sequence[str],
    x_max: float = 10.0,
) -> list[Path]:
    """CED PNGs: ``ced_<metric>.png`` per metric (one curve per run) and ``ced_all.png``
    (all metrics of the first run, plus the other runs dashed). ``runs``: {label: {metric: values}}.
    The legend shows each curve's mean NME over its valid images."""
    plt = _plt()
    out_dir = Path(out_dir)
    xs = np.linspace(0.0, x_max, 201)
    written = []
    for m in metrics:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for label, vals in runs.items():
            if m in vals and np.isfinite(vals[m]).any():
                v = vals[m]
                ax.plot(xs, ced(v, xs), label=f"{label} (mean {np.nanmean(v):.2f}%)")
        _style(ax, METRIC_TITLES.get(m, m), x_max)
        p = out_dir / f"ced_{m}.png"
        _save(fig, p)
        plt.close(fig)
        written.append(p)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r, (label, vals) in enumerate(runs.items()):
        for i, m in enumerate(metrics):
            if m in vals and np.isfinite(vals[m]).any():
                v = vals[m]
                name = METRIC_TITLES.get(m, m) + ("" if r == 0 else f" [{label}]")
                ax.plot(xs, ced(v, xs), color=f"C{i}", linestyle="-" if r == 0 else "--",
                        label=f"{name} (mean {np.nanmean(v):.2f}%)")
    _style(ax, "CED, all metrics", x_max)
    p = out_dir / "ced_all.png"
    _save(fig, p)
    plt.close(fig)
    written.append(p)
    return written


def _style(ax, title: str, x_max: float) -> None:
    ax.set_xlim(0, x_max)
    ax.set_ylim(0, 1.0)
    ax.set_xlabel("NME (%)")
    ax.set_ylabel("fraction of images")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def plot_gallery(path: str | os.PathLike, items: Sequence[dict[str, Any]], metric: str, cols: int = 4) -> Path | None:
    """Gallery of the worst images: each item {name, value, crop (H,W,3) uint8,
    pred_kpt (68,2), gt_kpt (68,2) in crop pixels}; prediction red, ground truth green."""
    if not items:
        return None
    plt = _plt()
    rows = int(math.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, it in zip(axes.ravel(), items):
        ax.imshow(it["crop"])
        g, p = np.asarray(it["gt_kpt"]), np.asarray(it.get("pred_kpt"))
        ax.scatter(g[:, 0], g[:, 1], s=4, c="lime", label="ground truth")
        if p is not None and p.ndim == 2:
            ax.scatter(p[:, 0], p[:, 1], s=4, c="red", label="prediction")
        ax.set_title(f"{it['name']}\n{METRIC_TITLES.get(metric, metric)} {it['value']:.2f}%", fontsize=7)
    axes.ravel()[0].legend(fontsize=6, loc="lower left")
    path = Path(path)
    _save(fig, path)
    plt.close(fig)
    return path
