"""Where evaluation gets its ground truth and its predictions.

Ground truth (:class:`GroundTruthBatch`), in batches, from
- an HDF5 validation file of ``build_dataset.py`` (:class:`HDF5Source`), or
- an AFLW2000-3D folder / zip plus a morphable model, rendered on the fly
  (:class:`FolderSource`; crop = exact 1.5x box of the ground-truth keypoints, no jitter).

Predictions (:class:`Predictions`, always in the original image frame) from
- a network (``.keras``, SavedModel, official checkpoint; via ``model.io.load_network``),
- ``oracle``: the ground-truth maps themselves (the floor reachable with this ground truth),
- a folder of files named like the samples (``<name>.npy`` / ``<name>.mat``):
  ``.npy`` (R, R, 3) = crop-frame position map (mapped back with the sample's transform);
  ``.npy`` (N, 3) = image-frame dense vertices in face-pixel order; ``.npy`` (68, 3) =
  image-frame landmarks (sparse metrics only); ``.mat`` = PRNet-keras mesh, key
  ``vertices`` (N, 3) in the camera frame **y up** (y_image = h - 1 - y), optional
  ``kptIdxs`` (68,) into the vertices; ``dotnet`` meshes (3, N) are transposed.
Image frame: x right, y down, z larger = nearer, pixels of the original image.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from prnet_keras.errors import InputError, PRNetError
from prnet_keras.evaluate.metrics import crop_to_image_batch
from prnet_keras.geometry import UVLayout


@dataclasses.dataclass
class GroundTruthBatch:
    """B samples: names; crops (B, R, R, 3) uint8; maps (B, R, R, 3) float32 crop pixels;
    transforms (B, 3, 3) image -> crop; kpt68 (B, 68, 3) image frame (pt3d_68 when the data
    has it); yaw (B,) degrees; image_size (B, 2) (h, w); index (B,) dataset positions."""

    names: list[str]
    crops: np.ndarray
    maps: np.ndarray
    transforms: np.ndarray
    kpt68: np.ndarray
    yaw: np.ndarray
    image_size: np.ndarray
    index: np.ndarray


def _stack(items: list[dict[str, Any]], index: list[int]) -> GroundTruthBatch:
    return GroundTruthBatch(
        names=[it["name"] for it in items],
        crops=np.stack([it["crop"] for it in items]),
        maps=np.stack([it["position_map"] for it in items]).astype(np.float32),
        transforms=np.stack([np.asarray(it["transform"], np.float64) for it in items]),
        kpt68=np.stack([np.asarray(it["kpt68"], np.float32) for it in items]),
        yaw=np.array([float(it["yaw"]) for it in items]),
        image_size=np.array([tuple(it["image_size"]) for it in items], np.int64),
        index=np.asarray(index, np.int64),
    )


def _non_finite(batch: GroundTruthBatch) -> dict[int, str]:
    """{row: reason} of the samples whose position map, landmarks or transform are not all finite."""
    out: dict[int, str] = {}
    for field in ("maps", "kpt68", "transforms"):
        values = getattr(batch, field)
        rows = ~np.isfinite(values.reshape(len(values), -1).sum(axis=1))
        for i in np.flatnonzero(rows):
            out.setdefault(int(i), f"{'position_map' if field == 'maps' else field.rstrip('s')} holds NaN or "
                                   "infinite values")
    return out


def _take(batch: GroundTruthBatch, rows: list[int]) -> GroundTruthBatch:
    return GroundTruthBatch([batch.names[i] for i in rows], **{f: getattr(batch, f)[rows] for f in
                            ("crops", "maps", "transforms", "kpt68", "yaw", "image_size", "index")})


class HDF5Source:
    """Ground truth from HDF5 file(s) written by ``build_dataset.py`` (any store mode).

    ``warnings``: one line per file built for training (``--buildmode train``): its crops
    are perturbed, so its numbers are not comparable with the protocol's exact crops.
    """

    def __init__(self, paths: str | Path | Sequence[str | Path]):
        from prnet_keras.data.hdf5 import PositionMapDataset, open_checked, read_attrs

        self.dataset = PositionMapDataset(paths)
        self.layout: UVLayout = self.dataset.layout
        self.names: list[str] = self.dataset.names
        self.description = f"hdf5:{','.join(str(p) for p in self.dataset.paths)}"
        self.warnings: list[str] = []
        for p in self.dataset.paths:
            with open_checked(p) as f:
                if read_attrs(f).get("buildmode") == "train":
                    self.warnings.append(
                        f"{p}: built with --buildmode train (perturbed crops): the numbers are not comparable with "
                        "the evaluation protocol's exact crops; evaluate a --buildmode val file")

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, indices: Sequence[int]) -> tuple[GroundTruthBatch | None, list[tuple[str, str]]]:
        """(batch of the readable samples or None, [(name, reason)] of the unreadable ones).

        A sample that cannot be read, or whose map, landmarks or transform hold NaN or
        infinite values, is a failed row: it never enters a statistic or stops the run.
        """
        try:
            batch = self._batch(list(indices))
        except (PRNetError, OSError, ValueError, KeyError):
            batch = None  # isolate the bad sample(s): read one by one
        if batch is not None:
            bad = _non_finite(batch)
            if not bad:
                return batch, []
            keep = [i for i in range(len(batch.names)) if i not in bad]
            failed = [(batch.names[i], f"unusable: {bad[i]}") for i in sorted(bad)]
            return (_take(batch, keep) if keep else None), failed
        items, failed = [], []
        for i in indices:
            try:
                b = self._batch([i])
            except (PRNetError, OSError, ValueError, KeyError) as exc:
                failed.append((self.names[i], f"unreadable: {exc}"))
                continue
            bad = _non_finite(b)
            if bad:
                failed.append((self.names[i], f"unusable: {bad[0]}"))
                continue
            items.append(b)
        if not items:
            return None, failed
        return GroundTruthBatch(
            names=sum((b.names for b in items), []),
            **{f: np.concatenate([getattr(b, f) for b in items]) for f in
               ("crops", "maps", "transforms", "kpt68", "yaw", "image_size", "index")},
        ), failed

    def _batch(self, indices: list[int]) -> GroundTruthBatch:
        b = self.dataset.read_batch(indices)
        return GroundTruthBatch(
            names=list(b["name"]), crops=b["image"], maps=b["position_map"], transforms=b["transform"],
            kpt68=b["kpt68"], yaw=np.asarray(b["yaw"], np.float64), image_size=np.asarray(b["image_size"]),
            index=np.asarray(indices, np.int64),
        )


class FolderSource:
    """Ground truth rendered on the fly from an AFLW2000-3D-layout folder or zip."""

    def __init__(self, datadir: str | Path, model: Any, layout: UVLayout, crop_config: Any = None):
        from prnet_keras.data.gt import GroundTruthMaker
        from prnet_keras.data.sources import list_samples

        self.refs = list_samples(datadir)
        self.layout = layout
        self.names = [r.name for r in self.refs]
        self.maker = GroundTruthMaker(model, layout, crop_config)
        self.description = f"datadir:{datadir} (model {getattr(model, 'name', '?')})"
        self.warnings: list[str] = []

    def __len__(self) -> int:
        return len(self.refs)

    def read(self, indices: Sequence[int]) -> tuple[GroundTruthBatch | None, list[tuple[str, str]]]:
        from prnet_keras.data.sources import read_sample

        items, idx, failed = [], [], []
        for i in indices:
            ref = self.refs[i]
            try:
                if ref.mat_path is None:
                    raise InputError(f"{ref.name}: image has no .mat")
                image, mat = read_sample(ref)
                gt = self.maker.make(image, self.maker.parse(mat, ref.name))
                self.maker.check_crop(gt["crop"])
                if not np.isfinite(gt["position_map"]).all() or not np.isfinite(gt["kpt68"]).all():
                    raise InputError(f"{ref.name}: ground truth has non-finite values")
            except (PRNetError, OSError, ValueError) as exc:
                failed.append((ref.name, str(exc)))
                continue
            gt["name"] = ref.name
            items.append(gt)
            idx.append(i)
        return (_stack(items, idx) if items else None), failed


# ---- predictions --------------------------------------------------------------------------
@dataclasses.dataclass
class Predictions:
    """kpt (B, 68, 3) and dense (B, N, 3) image-frame points (NaN where a prediction lacks
    them); errors: per-image reason or None."""

    kpt: np.ndarray
    dense: np.ndarray
    errors: list[str | None]


def kpt_vertex_index(layout: UVLayout) -> np.ndarray:
    """(68,) positions of the landmark pixels in face-pixel (``face_ind``) order; a landmark
    pixel outside the face mask takes the nearest face pixel."""
    face = layout.face_ind
    pos = np.searchsorted(face, layout.kpt_flat)
    pos = np.clip(pos, 0, len(face) - 1)
    miss = face[pos] != layout.kpt_flat
    if miss.any():
        r = layout.resolution
        fr, fc = np.divmod(face, r)
        kr, kc = layout.uv_kpt_ind[1][miss], layout.uv_kpt_ind[0][miss]
        d = (fr[None] - kr[:, None]) ** 2 + (fc[None] - kc[:, None]) ** 2
        pos[miss] = d.argmin(1)
    return pos


def _from_maps(maps: np.ndarray, gt: GroundTruthBatch, layout: UVLayout) -> tuple[np.ndarray, np.ndarray]:
    kpt = crop_to_image_batch(layout.keypoints_from_map(maps), gt.transforms)
    dense = crop_to_image_batch(layout.vertices_from_map(maps), gt.transforms)
    return kpt, dense


class OraclePredictor:
    """The ground-truth maps as predictions."""

    name = "oracle"

    def __init__(self, layout: UVLayout):
        self.layout = layout

    def predict(self, gt: GroundTruthBatch) -> Predictions:
        kpt, dense = _from_maps(gt.maps, gt, self.layout)
        return Predictions(kpt, dense, [None] * len(gt.names))


class NetworkPredictor:
    """A trained network: crops / 255 -> crop-pixel maps -> image frame."""

    def __init__(self, network: Any):
        self.network = network
        self.layout: UVLayout = network.layout
        self.name = str(getattr(network, "name", "network"))

    def predict(self, gt: GroundTruthBatch) -> Predictions:
        maps = np.asarray(self.network.predict(gt.crops.astype(np.float32) / 255.0), np.float32)
        kpt, dense = _from_maps(maps, gt, self.layout)
        return Predictions(kpt, dense, [None] * len(gt.names))


class FolderPredictor:
    """Predictions stored as ``<name>.npy`` / ``<name>.mat`` (see the module docstring)."""

    def __init__(self, folder: str | Path, layout: UVLayout):
        self.folder = Path(folder)
        self.layout = layout
        self.name = self.folder.name
        self._kidx = kpt_vertex_index(layout)

    def _find(self, name: str) -> Path | None:
        for ext in (".npy", ".mat"):
            for cand in (self.folder / f"{name}{ext}", self.folder / f"{Path(name).name}{ext}"):
                if cand.is_file():
                    return cand
        return None

    def predict(self, gt: GroundTruthBatch) -> Predictions:
        b, n = len(gt.names), self.layout.n_vertices
        kpt = np.full((b, 68, 3), np.nan)
        dense = np.full((b, n, 3), np.nan)
        errors: list[str | None] = [None] * b
        for i, name in enumerate(gt.names):
            path = self._find(name)
            try:
                if path is None:
                    raise InputError(f"{self.folder}: no prediction {name}.npy or {name}.mat")
                k, d = self._load(path, gt, i)
            except (PRNetError, OSError, ValueError) as exc:
                errors[i] = str(exc)
                continue
            kpt[i] = k
            if d is not None:
                dense[i] = d
        return Predictions(kpt, dense, errors)

    def _load(self, path: Path, gt: GroundTruthBatch, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        r, n = self.layout.resolution, self.layout.n_vertices
        if path.suffix == ".npy":
            try:  # memory-mapped: the declared shape is checked against the file before any copy
                a = np.load(path, allow_pickle=False, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise InputError(f"{path}: cannot read .npy ({exc})") from None
            if a.shape not in ((r, r, 3), (n, 3), (68, 3)):
                raise InputError(f"{path}: expected ({r},{r},3) crop-frame map, ({n},3) or (68,3) image-frame points, "
                                 f"got {a.shape}")
            a = np.array(a, np.float64)
            if a.shape == (r, r, 3):
                k, d = _from_maps(a[None], _one(gt, i), self.layout)
                return k[0], d[0]
            if a.shape == (n, 3):
                return a[self._kidx], a
            if a.shape == (68, 3):
                return a, None
            raise InputError(f"{path}: expected ({r},{r},3) crop-frame map, ({n},3) or (68,3) image-frame points, "
                             f"got {a.shape}")
        from prnet_keras.matfile import read_mat_file

        mat = read_mat_file(path)  # declared array sizes checked before anything is allocated
        if "vertices" not in mat:
            raise InputError(f"{path}: PRNet-keras mesh .mat needs key 'vertices' (N x 3, y up)")
        v = np.asarray(mat["vertices"], np.float64)
        if v.ndim == 2 and v.shape[0] == 3 and v.shape[1] != 3:
            v = v.T  # dotnet layout
        if v.ndim != 2 or v.shape[1] != 3:
            raise InputError(f"{path}: 'vertices' must be (N, 3), got {v.shape}")
        v = v.copy()
        v[:, 1] = gt.image_size[i, 0] - 1 - v[:, 1]  # camera frame (y up) -> image frame
        if "kptIdxs" in mat:
            kidx = np.asarray(mat["kptIdxs"]).astype(np.int64).reshape(-1)
            if kidx.shape != (68,) or kidx.min() < 0 or kidx.max() >= len(v):
                raise InputError(f"{path}: 'kptIdxs' must be 68 indices into vertices")
        elif len(v) == n:
            kidx = self._kidx
        else:
            raise InputError(f"{path}: {len(v)} vertices but the UV layout has {n}; add 'kptIdxs'")
        return v[kidx], (v if len(v) == n else None)


def _one(gt: GroundTruthBatch, i: int) -> GroundTruthBatch:
    return GroundTruthBatch([gt.names[i]], gt.crops[i:i + 1], gt.maps[i:i + 1], gt.transforms[i:i + 1],
                            gt.kpt68[i:i + 1], gt.yaw[i:i + 1], gt.image_size[i:i + 1], gt.index[i:i + 1])


def is_prediction_folder(path: Path) -> bool:
    """A folder of .npy/.mat predictions (not a SavedModel or a run folder of checkpoints)."""
    if not path.is_dir() or (path / "saved_model.pb").exists():
        return False
    return any(path.glob("*.npy")) or any(path.glob("*.mat")) or any(path.glob("*/*.npy")) or any(path.glob("*/*.mat"))
