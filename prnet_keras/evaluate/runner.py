"""The evaluation run: ground truth + predictions -> per-image NMEs -> CSV, summary, table, plots.

Library entry :func:`evaluate` (what ``evaluate_model.py`` and the quickstart call). Scoring
of one batch is :func:`score_batch` (pure numpy + ICP), usable on arrays directly.

Everything is scored in the original image frame (crop-frame maps are mapped back with
each sample's stored transform). Images that cannot be read or predicted are listed in
``summary["failed"]`` with their reason and excluded from every statistic.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from prnet_keras.errors import InputError, PRNetWarning
from prnet_keras.evaluate import report
from prnet_keras.evaluate.icp import BACKENDS, grid_normals, usable_backend
from prnet_keras.evaluate.metrics import NORMALIZERS, SHIFTZ, alignment_nme, normalizer, reconstruction_nme
from prnet_keras.evaluate.sources import (
    FolderPredictor, FolderSource, GroundTruthBatch, HDF5Source, NetworkPredictor, OraclePredictor, Predictions,
    crop_to_image_batch, is_prediction_folder,
)
from prnet_keras.geometry import CropConfig, UVLayout, apply_transform
from prnet_keras.utils import atomic_write_text, progress_bar, usable_cores, write_json

SHIFTZ_DESCRIPTIONS = {
    "min": "each point set (prediction and ground truth separately) shifted so its minimum z over the compared "
           "points is 0 (sparse: the 68 landmarks; dense: the face points), as the official PRNet evaluation",
    "mean": "each point set shifted so its mean z over the compared points is 0",
    "none": "z used as stored (no alignment)",
}


@dataclasses.dataclass
class Settings:
    """What is scored and how (recorded in summary.json; --resume requires the same).

    The defaults are the packaged ``evaluate`` section (``evalidxs`` all = every metric).
    """

    metrics: tuple[str, ...] = report.METRICS
    normalizer: str = "bbox"
    recon_normalizer: str = "interocular"
    shiftZ: str = "min"
    icp: str = "open3d"
    icp_method: str = "point_to_plane"
    icp_points: int = 4000
    workers: int = 0  # threads for per-image ICP; 0 = one per available core
    yaw_bins: tuple[float, ...] = report.DEFAULT_YAW_BINS
    ced_max: float = 10.0

    def validate(self) -> "Settings":
        bad = [m for m in self.metrics if m not in report.METRICS]
        if bad or not self.metrics:
            raise InputError(f"--evalidxs: unknown metric(s) {bad}; expected indices 0-5")
        if self.normalizer not in NORMALIZERS or self.recon_normalizer not in NORMALIZERS:
            raise InputError(f"--normalizer: expected one of {', '.join(NORMALIZERS)}")
        if self.shiftZ not in SHIFTZ:
            raise InputError(f"--shiftZ: expected one of {', '.join(SHIFTZ)}, got {self.shiftZ!r}")
        if self.icp not in BACKENDS:
            raise InputError(f"--icp: expected one of {', '.join(BACKENDS)}, got {self.icp!r}")
        if self.icp_method not in ("point_to_plane", "point_to_point"):
            raise InputError(f"--icp-method: expected point_to_plane or point_to_point, got {self.icp_method!r}")
        edges = list(self.yaw_bins)
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
            raise InputError(f"yaw_bins must be increasing edges, got {edges}")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["metrics"], d["yaw_bins"] = list(self.metrics), list(self.yaw_bins)
        d["yaw_bin_labels"] = report.bin_labels(self.yaw_bins)
        d["shiftZ_description"] = SHIFTZ_DESCRIPTIONS[self.shiftZ]
        d["frame"] = "original image pixels: x right, y down, z larger = nearer"
        return d


def score_batch(gt: GroundTruthBatch, pred: Predictions, layout: UVLayout, settings: Settings) -> dict[str, np.ndarray]:
    """Per-image NMEs (percent) of one batch: {metric: (B,)}; NaN where not scorable.

    Sparse: predicted landmarks vs ``gt.kpt68`` (pt3d_68 when the data has it). Dense: the
    face-pixel points vs the ground-truth map at the same UV pixels (pixels the ground truth
    does not cover are left out). Reconstruction: ICP then nearest-point distances.
    """
    want = set(settings.metrics)
    out: dict[str, np.ndarray] = {}
    b = len(gt.names)
    gt_kpt = gt.kpt68.astype(np.float64)
    need_dense = bool(want & {"dense_2d", "dense_3d", "reconstruction_2d", "reconstruction_3d"})
    gt_dense = mask = gt_mask = None
    if need_dense or "diagonal" in (settings.normalizer, settings.recon_normalizer):
        face_px = layout.vertices_from_map(gt.maps)
        gt_mask = np.any(face_px != 0, axis=-1)  # UV pixels the ground truth covers
        mask = gt_mask & np.isfinite(pred.dense).all(-1)
        gt_dense = crop_to_image_batch(face_px, gt.transforms)
    norm = normalizer(settings.normalizer, gt_kpt, gt_dense, gt_mask)  # from the ground truth only
    if want & {"sparse_2d", "sparse_3d"}:
        s2, s3 = alignment_nme(pred.kpt, gt_kpt, norm, settings.shiftZ)
        out["sparse_2d"], out["sparse_3d"] = s2, s3
    if want & {"dense_2d", "dense_3d"}:
        d2, d3 = alignment_nme(pred.dense, gt_dense, norm, settings.shiftZ, mask)
        out["dense_2d"], out["dense_3d"] = d2, d3
    if want & {"reconstruction_2d", "reconstruction_3d"}:
        rnorm = normalizer(settings.recon_normalizer, gt_kpt, gt_dense, gt_mask)
        r2, r3 = np.full(b, np.nan), np.full(b, np.nan)
        normals = _gt_normals(gt, layout) if settings.icp_method == "point_to_plane" else None
        dims = tuple(d for d, m in ((2, "reconstruction_2d"), (3, "reconstruction_3d")) if m in want)

        def one(i: int) -> None:
            m = mask[i] & np.isfinite(gt_dense[i]).all(-1)
            if m.sum() >= 6:
                try:
                    r2[i], r3[i] = reconstruction_nme(
                        pred.dense[i][m], gt_dense[i][m], rnorm[i], None if normals is None else normals[i][m],
                        settings.icp, settings.icp_method, settings.icp_points, dims,
                    )
                except InputError:  # a degenerate point set (e.g. all points equal): not scorable
                    pass

        # images are independent and numpy / cKDTree / open3d release the GIL: use the cores
        list(_pool(settings.workers).map(one, range(b)))
        out["reconstruction_2d"], out["reconstruction_3d"] = r2, r3
    return {m: out[m] for m in settings.metrics}


_POOLS: dict[int, Any] = {}


def _pool(workers: int):
    from concurrent.futures import ThreadPoolExecutor

    if workers <= 0:
        workers = usable_cores()
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="prnet-eval")
    return _POOLS[workers]


def _gt_normals(gt: GroundTruthBatch, layout: UVLayout) -> np.ndarray:
    """(B, N, 3) image-frame unit normals of the ground-truth surface at the face pixels.

    Computed on the crop-frame map grid: crop -> image is a similarity (uniform scale of
    x, y and z), so normals only turn with its in-plane rotation (none for our crops).
    """
    valid = np.any(gt.maps != 0, axis=-1)
    n = grid_normals(gt.maps, valid).reshape(len(gt.names), -1, 3)[:, layout.face_ind]
    a = np.linalg.inv(gt.transforms)[:, :2, :2]
    rot = a / np.sqrt(np.abs(np.linalg.det(a)))[:, None, None]
    n[..., :2] = n[..., :2] @ rot.transpose(0, 2, 1).astype(n.dtype)
    return n


# ---- sources and models ------------------------------------------------------------------
def open_run(
    model: Any, hdf5: Any = None, datadir: str | Path | None = None, bfm: str = "synthetic",
    uv_data: str | Path | None = None, engine: str = "auto",
    crop_config: CropConfig | Mapping[str, Any] | None = None,
) -> tuple[Any, Any, UVLayout]:
    """(ground-truth source, predictor, layout) for a model spec and a data spec (``engine``:
    what runs a Keras network, see ``model.engines``; ``crop_config``: crops of ``datadir``)."""
    if (hdf5 is None) == (datadir is None):
        raise InputError("give exactly one of --hdf5 (validation HDF5) or --datadir (AFLW2000-3D folder/zip)")
    network = None
    spec = model if isinstance(model, (str, Path)) else None
    if spec is None and model is not None and hasattr(model, "predict"):
        network = model
    elif spec is None:
        raise InputError("--model: expected a model file, 'oracle' or a folder of predictions")
    elif str(spec) != "oracle" and not is_prediction_folder(Path(spec)):
        if not Path(spec).exists() and not Path(str(spec) + ".index").exists():
            raise InputError(f"--model {spec}: no such file or folder (expected .keras, SavedModel, checkpoint prefix, "
                             "'oracle' or a folder of .npy/.mat predictions)")
        from prnet_keras.model.io import load_network

        network = load_network(spec, uv_data=uv_data, engine=engine)
    if hdf5 is not None:
        source = HDF5Source(hdf5)
    else:
        from prnet_keras.data.fitcheck import check_fits_match_model
        from prnet_keras.geometry import load_morphable_model, load_uv_layout

        mm = load_morphable_model(bfm)
        layout = network.layout if network is not None else load_uv_layout(uv_data, mm)
        source = FolderSource(datadir, mm, layout, crop_config)
        check_fits_match_model(datadir, source.refs, mm, str(bfm))
    layout = source.layout
    if network is not None:
        predictor: Any = NetworkPredictor(network)
        if predictor.layout != layout:
            raise InputError(
                f"--model uses UV layout {predictor.layout.hash()} but the ground truth uses {layout.hash()}: "
                "dense metrics need the same layout (build the HDF5 with the model's --uv-data)")
    elif str(spec) == "oracle":
        predictor = OraclePredictor(layout)
    else:
        predictor = FolderPredictor(spec, layout)
    return source, predictor, layout


# ---- the run -----------------------------------------------------------------------------
def make_settings(evalidxs: Sequence[int] | None = None, normalizer: str | None = None,
                  recon_normalizer: str | None = None, shiftZ: str | None = None, icp: str | None = None,
                  icp_method: str | None = None, yaw_bins: Sequence[float] | None = None,
                  ced_max: float | None = None) -> Settings:
    """Validated :class:`Settings`; None keeps the default (the packaged ``evaluate`` section).

    evalidxs: metric indices 0-5 (``report.METRICS`` order). The ICP backend falls back from
    open3d to scipy when open3d cannot be imported here.
    """
    default = Settings()
    idxs = list(range(len(report.METRICS)) if evalidxs is None else evalidxs)
    if any(not isinstance(i, (int, np.integer)) or not 0 <= int(i) < 6 for i in idxs):
        raise InputError(f"--evalidxs: expected indices 0-5, got {idxs}")
    metrics = tuple(report.METRICS[i] for i in sorted(set(int(i) for i in idxs)))
    return Settings(
        metrics=metrics, normalizer=normalizer or default.normalizer,
        recon_normalizer=recon_normalizer or default.recon_normalizer,
        shiftZ=shiftZ or default.shiftZ, icp=usable_backend(icp or default.icp),
        icp_method=icp_method or default.icp_method,
        yaw_bins=tuple(float(v) for v in (default.yaw_bins if yaw_bins is None else yaw_bins)),
        ced_max=float(default.ced_max if ced_max is None else ced_max),
    ).validate()


def _resume_rows(out: Path, settings: Settings, identity: dict) -> list[dict[str, Any]]:
    import json

    state = out / "run_state.json"
    if not state.exists() or not (out / "per_image.csv").exists():
        return []
    try:
        old = json.loads(state.read_text())
    except (OSError, ValueError):
        raise InputError(f"{state}: unreadable; remove it or run without --resume") from None
    mine = {"settings": settings.to_dict(), **identity}
    for key in mine:
        if old.get(key) != mine[key]:
            raise InputError(f"--resume: {out} was made with a different {key} ({old.get(key)!r}); "
                             "use another --outputdir or drop --resume")
    metrics, rows = report.read_csv(out / "per_image.csv")
    if list(metrics) != list(settings.metrics):
        raise InputError(f"--resume: {out / 'per_image.csv'} has metrics {metrics}, expected {list(settings.metrics)}")
    return rows


def evaluate(
    model: Any,
    hdf5: Any = None,
    datadir: str | Path | None = None,
    outputdir: str | Path = "evaluation",
    evalidxs: Sequence[int] | None = None,
    batchsize: int = 16,
    shiftZ: str | None = None,
    normalizer: str | None = None,
    recon_normalizer: str | None = None,
    icp: str | None = None,
    icp_method: str | None = None,
    compare: Sequence[str | Path] = (),
    resume: bool = False,
    bfm: str = "synthetic",
    uv_data: str | Path | None = None,
    limit: int | None = None,
    gallery: int = 12,
    progress: bool = True,
    engine: str = "auto",
    yaw_bins: Sequence[float] | None = None,
    ced_max: float | None = None,
    crop_config: CropConfig | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` (path, loaded Network, or ``"oracle"``, or a prediction folder) on
    ``hdf5`` or ``datadir``; write per_image.csv, summary.json, results.md, CED PNGs and a
    gallery of the worst images into ``outputdir``; return the summary dict.

    Scoring options left None take the defaults of :class:`Settings` (the packaged
    ``evaluate`` section); ``engine`` runs a Keras network (``model.engines``);
    ``crop_config`` makes the crops of ``datadir`` ground truth (``geometry.CropConfig``).

    summary["metrics"][name] = {mean_all, bins{label: {mean, count}}, balanced_mean, median,
    count, excluded}, NME in percent; summary["failed"] = [{name, reason}];
    summary["warnings"]: lines about the data that make the numbers not comparable.
    """
    settings = make_settings(evalidxs, normalizer, recon_normalizer, shiftZ, icp, icp_method, yaw_bins, ced_max)
    if batchsize < 1:
        raise InputError(f"--batchsize must be >= 1, got {batchsize}")
    out = Path(outputdir)
    source, predictor, layout = open_run(model, hdf5, datadir, bfm, uv_data, engine, crop_config)
    for line in source.warnings:
        warnings.warn(line, PRNetWarning, stacklevel=2)
    n = len(source) if limit is None else min(len(source), int(limit))
    identity = {"model": str(model) if isinstance(model, (str, Path)) else predictor.name,
                "data": source.description, "layout": layout.hash()}
    out.mkdir(parents=True, exist_ok=True)
    rows = _resume_rows(out, settings, identity) if resume else []
    done = {r["name"] for r in rows}
    csv_path = out / "per_image.csv"
    report.write_csv(csv_path, rows, settings.metrics)  # fresh file, or the clean kept rows
    write_json(out / "run_state.json", {"settings": settings.to_dict(), **identity})
    todo = [i for i in range(n) if source.names[i] not in done]
    _run_batches(source, predictor, layout, settings, todo, batchsize, csv_path, rows, progress)
    order = {name: i for i, name in enumerate(source.names)}
    rows.sort(key=lambda r: order.get(r["name"], len(order)))
    report.write_csv(csv_path, rows, settings.metrics)
    summary = build_summary(rows, settings, identity, n)
    summary["warnings"] = list(source.warnings)
    compared = load_runs(compare)
    write_outputs(out, summary, rows, settings, compared)
    if gallery > 0:
        path = worst_gallery(out, rows, source, predictor, layout, settings, gallery)
        if path is not None:
            summary["plots"].append(path.name)
    write_json(out / "summary.json", summary)
    return summary


def _run_batches(source, predictor, layout, settings, todo, batchsize, csv_path, rows, progress) -> None:
    bar = progress_bar(len(todo), "evaluate", "img", progress)
    for start in range(0, len(todo), batchsize):
        idx = todo[start:start + batchsize]
        gt, failed = source.read(idx)
        new = [{"name": name, "yaw": math.nan, "error": reason} for name, reason in failed]
        if gt is not None:
            pred = predictor.predict(gt)
            scores = score_batch(gt, pred, layout, settings)
            for i, name in enumerate(gt.names):
                row = {"name": name, "yaw": float(gt.yaw[i]), "error": pred.errors[i] or ""}
                row.update({m: (math.nan if pred.errors[i] else float(v[i])) for m, v in scores.items()})
                new.append(row)
        report.append_rows(csv_path, new, settings.metrics)
        rows.extend(new)
        bar.update(len(idx))
    bar.close()


def build_summary(rows: list[dict[str, Any]], settings: Settings, identity: dict, n: int) -> dict[str, Any]:
    yaw = np.array([r.get("yaw", math.nan) for r in rows], np.float64)
    metrics = {m: report.summarize(np.array([r.get(m, math.nan) for r in rows], np.float64), yaw, settings.yaw_bins)
               for m in settings.metrics}
    failed = [{"name": r["name"], "reason": r["error"]} for r in rows if r.get("error")]
    return {"metrics": metrics, "images": n, "scored": len(rows) - len(failed), "failed": failed,
            "settings": settings.to_dict(), **identity}


def load_runs(dirs: Sequence[str | Path]) -> dict[str, dict[str, Any]]:
    """Earlier runs for --compare: {label: {"summary": dict, "values": {metric: (n,)}}}."""
    import json

    runs = {}
    for d in dirs:
        d = Path(d)
        try:
            summary = json.loads((d / "summary.json").read_text())
        except (OSError, ValueError):
            raise InputError(f"--compare {d}: no readable summary.json (is it an evaluation output folder?)") from None
        metrics, rows = report.read_csv(d / "per_image.csv")
        values = {m: np.array([r[m] for r in rows], np.float64) for m in metrics}
        label = d.name if d.name not in runs else str(d)
        runs[label] = {"summary": summary, "values": values}
    return runs


def write_outputs(out: Path, summary: dict, rows: list[dict], settings: Settings, compared: dict) -> None:
    atomic_write_text(out / "results.md",
                      report.markdown_table(summary, {k: v["summary"] for k, v in compared.items()}))
    runs = {"this run": {m: np.array([r.get(m, math.nan) for r in rows], np.float64) for m in settings.metrics}}
    runs.update({k: v["values"] for k, v in compared.items()})
    summary["plots"] = [p.name for p in report.plot_ced(out, runs, settings.metrics, settings.ced_max)]


def worst_gallery(out: Path, rows, source, predictor, layout, settings: Settings, count: int) -> Path | None:
    """Re-read and re-predict the ``count`` worst images of the first metric; draw them."""
    metric = settings.metrics[0]
    pos = {name: i for i, name in enumerate(source.names)}
    scored = [r for r in rows if math.isfinite(r.get(metric, math.nan)) and r["name"] in pos]
    worst = sorted(scored, key=lambda r: -r[metric])[:count]
    if not worst:
        return None
    gt, _ = source.read([pos[r["name"]] for r in worst])
    if gt is None:
        return None
    pred = predictor.predict(gt)
    items = []
    value = {r["name"]: r[metric] for r in worst}
    for i, name in enumerate(gt.names):
        items.append({
            "name": name, "value": value[name], "crop": gt.crops[i],
            "gt_kpt": apply_transform(gt.kpt68[i], gt.transforms[i])[:, :2],
            "pred_kpt": (apply_transform(pred.kpt[i], gt.transforms[i])[:, :2]
                         if np.isfinite(pred.kpt[i]).all() else None),
        })
    return report.plot_gallery(out / f"worst_{metric}.png", items, metric)


def compare_only(outputdir: str | Path, runs: Sequence[str | Path]) -> dict[str, Any]:
    """Overlay earlier runs without evaluating: CED PNGs and results.md (first run = main columns)."""
    loaded = load_runs(runs)
    if not loaded:
        raise InputError("--compare: no run folders given")
    out = Path(outputdir)
    out.mkdir(parents=True, exist_ok=True)
    labels = list(loaded)
    main_summary = loaded[labels[0]]["summary"]
    others = {k: loaded[k]["summary"] for k in labels[1:]}
    atomic_write_text(out / "results.md", report.markdown_table(main_summary, others))
    metrics = [m for m in report.METRICS if any(m in r["values"] for r in loaded.values())]
    report.plot_ced(out, {k: v["values"] for k, v in loaded.items()}, metrics,
                    float(main_summary["settings"].get("ced_max", 10.0)))
    return main_summary
