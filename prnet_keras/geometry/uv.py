"""The UV layout of a position map: face region, landmark pixels, mesh triangles, loss weights.

A :class:`UVLayout` is everything that turns a (R, R, 3) position map into a mesh and
landmarks and weights the loss. It is built from a morphable model (UV footprint of its
triangles) or loaded from an official PRNet ``uv-data`` folder, and it is hashable so
datasets and models record which layout they were made with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile
from functools import cached_property
from pathlib import Path

import numpy as np

from prnet_keras import RESOLUTION
from prnet_keras.errors import InputError
from prnet_keras.geometry.morphable import REGION_NAMES, MorphableModel
from prnet_keras.geometry.raster import render_uv_map, uv_pixel_coords

# Paper's loss weights, landmark : eyes-nose-mouth : rest of face : outside = 16 : 4 : 3 : 0,
# stored divided by 16 (the official uv_weight_mask.png holds 255 : 64 : 48 : 0).
WEIGHT_KPT, WEIGHT_REGION, WEIGHT_FACE = 1.0, 4.0 / 16.0, 3.0 / 16.0
# Region label codes of ``UVLayout.regions``: 0 rest of face / outside, then REGION_NAMES in order
# (1 nose, 2 eye, 3 mouth), as ``MorphableModel.region_labels``.
REGION_CODES = {name: code for code, name in enumerate(REGION_NAMES, start=1)}
# 68-point landmarks nearest to each region (iBUG scheme): brows + eyes, nose, mouth.
_REGION_LANDMARKS = {"eye": list(range(17, 27)) + list(range(36, 48)), "nose": list(range(27, 36)),
                     "mouth": list(range(48, 68))}


def grid_triangles(face_mask: np.ndarray) -> np.ndarray:
    """Triangulate the face pixels on the pixel grid.

    Each 2x2 quad is split along its top-right / bottom-left diagonal and each half is kept
    when its 3 corners are face pixels (the official mask gives 86,907 triangles, as
    PRNet's ``triangles.txt``). Returns (T, 3) int32 indices into the face-pixel list
    (row-major order = ``face_ind``). Winding is clockwise in image coordinates (y down),
    counter-clockwise for a y-up viewer, so a frontal face's normals point to +z.
    """
    mask = np.asarray(face_mask, bool)
    index = np.full(mask.shape, -1, np.int64)
    index[mask] = np.arange(int(mask.sum()))
    tl, tr, bl, br = mask[:-1, :-1], mask[:-1, 1:], mask[1:, :-1], mask[1:, 1:]
    out = []
    r_up, c_up = np.nonzero(tl & bl & tr)
    out.append(np.stack([index[r_up, c_up], index[r_up + 1, c_up], index[r_up, c_up + 1]], 1))
    r_lo, c_lo = np.nonzero(tr & bl & br)
    out.append(np.stack([index[r_lo, c_lo + 1], index[r_lo + 1, c_lo], index[r_lo + 1, c_lo + 1]], 1))
    return np.concatenate(out, 0).astype(np.int32)


@dataclasses.dataclass(eq=False)
class UVLayout:
    """UV layout of resolution R.

    face_mask (R, R) bool; uv_kpt_ind (2, 68) int (row 0 = column, row 1 = row);
    weight_mask (R, R) float32 in [0, 1] with ratios 16:4:3:0; triangles (T, 3) int32
    indices into ``face_ind`` order; canonical_vertices (N, 3) float32, a frontal face at the
    face pixels (N = face_mask.sum()), y up, used as the pose reference.

    regions (R, R) int8 or None: facial region per pixel (``REGION_CODES``: 1 nose, 2 eye,
    3 mouth, 0 elsewhere), from the morphable model's region labels or the official
    ``uv_face_eyes.png`` / ``uv_face.png`` pair. An annotation, not part of the layout's
    identity (:meth:`hash`); :meth:`region_labels` derives it when absent.
    """

    resolution: int
    face_mask: np.ndarray
    uv_kpt_ind: np.ndarray
    weight_mask: np.ndarray
    triangles: np.ndarray
    canonical_vertices: np.ndarray
    source: str = "custom"
    regions: np.ndarray | None = None

    def __post_init__(self) -> None:
        r = self.resolution = int(self.resolution)
        self.face_mask = np.asarray(self.face_mask, bool)
        self.uv_kpt_ind = np.asarray(self.uv_kpt_ind).astype(np.int64)
        self.weight_mask = np.asarray(self.weight_mask, np.float32)
        self.triangles = np.asarray(self.triangles).astype(np.int32)
        self.canonical_vertices = np.asarray(self.canonical_vertices, np.float32)
        if self.face_mask.shape != (r, r) or self.weight_mask.shape != (r, r):
            raise InputError(f"UV layout: face_mask {self.face_mask.shape} and weight_mask "
                             f"{self.weight_mask.shape} must be ({r}, {r})")
        if self.uv_kpt_ind.shape != (2, 68) or self.uv_kpt_ind.min() < 0 or self.uv_kpt_ind.max() >= r:
            raise InputError(f"UV layout: uv_kpt_ind must be (2, 68) pixel indices in [0, {r}), "
                             f"got shape {self.uv_kpt_ind.shape}")
        n = int(self.face_mask.sum())
        if self.canonical_vertices.shape != (n, 3):
            raise InputError(f"UV layout: canonical_vertices must be ({n}, 3), got {self.canonical_vertices.shape}")
        if self.triangles.size == 0:
            self.triangles = self.triangles.reshape(0, 3)
        if self.triangles.ndim != 2 or self.triangles.shape[1] != 3:
            raise InputError(f"UV layout: triangles must be (T, 3), got shape {self.triangles.shape}")
        if self.triangles.size and (self.triangles.min() < 0 or self.triangles.max() >= n):
            raise InputError(f"UV layout: triangles must index the {n} face pixels")
        if self.regions is not None:
            self.regions = np.asarray(self.regions).astype(np.int8)
            if self.regions.shape != (r, r) or self.regions.min() < 0 or self.regions.max() > len(REGION_NAMES):
                raise InputError(f"UV layout: regions must be ({r}, {r}) labels in [0, {len(REGION_NAMES)}], "
                                 f"got shape {self.regions.shape}")

    @property
    def face_ind(self) -> np.ndarray:
        """(N,) flat indices row*R + col of the face pixels, row-major (official face_ind.txt)."""
        return np.flatnonzero(self.face_mask.reshape(-1))

    @property
    def n_vertices(self) -> int:
        return int(self.face_mask.sum())

    @property
    def kpt_flat(self) -> np.ndarray:
        """(68,) flat indices row*R + col of the landmark pixels."""
        return self.uv_kpt_ind[1] * self.resolution + self.uv_kpt_ind[0]

    def vertices_from_map(self, position_map: np.ndarray) -> np.ndarray:
        """(..., R, R, 3) position map(s) -> (..., N, 3) face vertices."""
        pm = np.asarray(position_map)
        return pm.reshape(pm.shape[:-3] + (-1, pm.shape[-1]))[..., self.face_ind, :]

    def keypoints_from_map(self, position_map: np.ndarray) -> np.ndarray:
        """(..., R, R, 3) position map(s) -> (..., 68, 3) landmarks."""
        pm = np.asarray(position_map)
        return pm[..., self.uv_kpt_ind[1], self.uv_kpt_ind[0], :]

    @cached_property
    def nearest_face_index(self) -> np.ndarray:
        """(R·R,) int64: for every pixel the flat index of the nearest face pixel (itself on the face).

        ``map.reshape(-1, C)[layout.nearest_face_index]`` extends a UV map past the face edge,
        so resampling it does not blend in the values outside the face.
        """
        from scipy import ndimage

        _, (ri, ci) = ndimage.distance_transform_edt(~self.face_mask, return_indices=True)
        return (ri * self.resolution + ci).reshape(-1).astype(np.int64)

    def region_labels(self) -> np.ndarray:
        """(R, R) int8 facial regions (``REGION_CODES``), 0 outside them and outside the face.

        The stored ``regions`` when the layout has them, else :func:`regions_from_weight_mask`
        (layouts saved without regions).
        """
        if self.regions is not None:
            return self.regions
        return regions_from_weight_mask(self.weight_mask, self.face_mask, self.uv_kpt_ind)

    # ---- identity / serialisation ------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "resolution": np.array(self.resolution),
            "face_mask": self.face_mask,
            "uv_kpt_ind": self.uv_kpt_ind,
            "weight_mask": self.weight_mask,
            "triangles": self.triangles,
            "canonical_vertices": self.canonical_vertices,
        }

    def hash(self) -> str:
        """Short stable content hash (16 hex digits) of the layout's arrays."""
        h = hashlib.sha256()
        for key, a in self.arrays().items():
            h.update(key.encode())
            a = np.ascontiguousarray(a)
            h.update(str(a.dtype).encode() + str(a.shape).encode())
            h.update(a.tobytes())
        return h.hexdigest()[:16]

    def __hash__(self) -> int:
        return int(self.hash(), 16)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UVLayout) and self.hash() == other.hash()

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        extra = {} if self.regions is None else {"regions": self.regions}
        np.savez_compressed(buf, source=np.array(self.source), **self.arrays(), **extra)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "UVLayout":
        with np.load(io.BytesIO(data)) as z:
            return cls(
                resolution=int(z["resolution"]), face_mask=z["face_mask"], uv_kpt_ind=z["uv_kpt_ind"],
                weight_mask=z["weight_mask"], triangles=z["triangles"],
                canonical_vertices=z["canonical_vertices"], source=str(z["source"]),
                regions=z["regions"] if "regions" in z.files else None,
            )

    def save(self, path: str | Path) -> None:
        from prnet_keras.utils import atomic_write_bytes

        atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> "UVLayout":
        try:
            return cls.from_bytes(Path(path).read_bytes())
        except FileNotFoundError:
            raise InputError(f"{path}: UV layout file not found") from None
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path}: not a UV layout file ({type(exc).__name__}: {exc})") from None

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_model(
        cls, model: MorphableModel, resolution: int = RESOLUTION, face_mask: np.ndarray | str | Path | None = None
    ) -> "UVLayout":
        """Derive a layout from a morphable model's UV coordinates.

        face mask = pixels covered by the face triangles in UV space (or a given (R, R) mask
        array / PNG, non-zero = face); uv_kpt_ind = rounded UV pixel of each kpt_ind vertex;
        weight mask = 16 at the landmark pixels, 4 on the nose/eye/mouth regions, 3 on the
        rest of the face, 0 outside (stored / 16); canonical vertices = the model's centred
        mean face (model frame, y up) at the face pixels (where a user mask goes beyond the
        UV footprint, the value of the nearest covered pixel).
        """
        uv_px = uv_pixel_coords(model.uv_coords, resolution)
        mean = model.vertices()
        regions = np.stack([model.region_labels() == k for k in (1, 2, 3)], 1).astype(np.float32)
        # One render of [coverage, 3 region indicators, centred mean face] (7 channels).
        attr = np.concatenate([np.ones((model.n_vertices, 1), np.float32), regions, mean - mean.mean(0)], 1)
        maps = render_uv_map(uv_px, model.triangles, attr, resolution)
        mask = maps[..., 0] > 0 if face_mask is None else _load_mask(face_mask, resolution)
        kpt = np.clip(np.rint(uv_px[model.kpt_ind]).astype(np.int64).T, 0, resolution - 1)
        weight = np.where(mask, WEIGHT_FACE, 0.0).astype(np.float32)
        # A pixel is in eyes/nose/mouth when its whole triangle is (indicator interpolates to 1):
        # on the BFM this matches the official weight mask best (IoU 0.96 vs 0.91 for "any share").
        weight[mask & (maps[..., 1:4].max(-1) > 1.0 - 1e-4)] = WEIGHT_REGION
        weight[kpt[1], kpt[0]] = WEIGHT_KPT
        canon_map = maps[..., 4:7]
        covered = maps[..., 0] > 0
        if np.any(mask & ~covered):
            # A user mask may reach past the UV footprint: extend the face by its nearest pixel.
            from scipy import ndimage

            _, (ri, ci) = ndimage.distance_transform_edt(~covered, return_indices=True)
            canon_map = canon_map[ri, ci]
        canonical = canon_map.reshape(-1, 3)[np.flatnonzero(mask.reshape(-1))]
        # Region of a pixel: the label whose indicator dominates there (more than half).
        ind = maps[..., 1:4]
        regions = np.where(mask & (ind.max(-1) > 0.5), ind.argmax(-1) + 1, 0).astype(np.int8)
        return cls(resolution, mask, kpt, weight, grid_triangles(mask), canonical, source=f"model:{model.name}",
                   regions=regions)

    @classmethod
    def from_prnet_folder(cls, folder: str | Path) -> "UVLayout":
        """Load an official PRNet ``Data/uv-data`` folder (256²).

        Uses uv_kpt_ind.txt, face_ind.txt, uv_weight_mask.png and canonical_vertices.npy;
        triangles.txt when present, else the grid triangulation of the face pixels. Regions:
        nose and mouth from the weight mask (:func:`regions_from_weight_mask`), the eyes where
        uv_face_eyes.png differs from uv_face.png (the official demo's eye mask) when both exist.
        """
        from PIL import Image

        folder = Path(folder)
        need = ["uv_kpt_ind.txt", "face_ind.txt", "uv_weight_mask.png", "canonical_vertices.npy"]
        missing = [f for f in need if not (folder / f).exists()]
        if missing:
            raise InputError(f"{folder}: not a PRNet uv-data folder, missing {', '.join(missing)}")
        res = RESOLUTION
        kpt = _read_int_txt(folder / "uv_kpt_ind.txt")
        face_ind = _read_int_txt(folder / "face_ind.txt").reshape(-1)
        mask = np.zeros(res * res, bool)
        if face_ind.size == 0 or face_ind.min() < 0 or face_ind.max() >= res * res:
            raise InputError(f"{folder / 'face_ind.txt'}: indices must lie in [0, {res * res})")
        if np.unique(face_ind).size != face_ind.size:
            raise InputError(f"{folder / 'face_ind.txt'}: contains repeated pixel indices")
        mask[face_ind] = True
        mask = mask.reshape(res, res)
        try:
            weight = np.asarray(Image.open(folder / "uv_weight_mask.png").convert("L"), np.float32) / 255.0
            canonical = np.load(folder / "canonical_vertices.npy").astype(np.float32)
        except (OSError, ValueError) as exc:
            raise InputError(f"{folder}: cannot read uv_weight_mask.png / canonical_vertices.npy ({exc})") from None
        if canonical.shape != (face_ind.size, 3):
            raise InputError(f"{folder / 'canonical_vertices.npy'}: expected ({face_ind.size}, 3) (one row per "
                             f"face_ind entry), got {canonical.shape}")
        if kpt.shape != (2, 68):
            raise InputError(f"{folder / 'uv_kpt_ind.txt'}: expected 2 rows x 68 columns, got {kpt.shape}")
        # canonical_vertices.npy follows face_ind.txt's order; ours is row-major (sorted).
        canonical = canonical[np.argsort(face_ind, kind="stable")]
        # The official file is in image orientation (y down: chin below brows); the layout's
        # pose reference is y up, else Umeyama (no reflections) fits a wrong rotation.
        canonical = canonical * np.array([1.0, -1.0, 1.0], np.float32)
        tri_path = folder / "triangles.txt"
        if tri_path.exists():
            tri = _read_int_txt(tri_path)
            if tri.ndim != 2 or tri.shape[1] != 3 or tri.min() < 0 or tri.max() >= face_ind.size:
                raise InputError(f"{tri_path}: expected (T, 3) indices into face_ind, got shape {tri.shape}")
        else:
            tri = grid_triangles(mask)
        regions = regions_from_weight_mask(weight, mask, kpt)
        eyes = _official_eye_mask(folder, res)
        if eyes is not None:
            regions[regions == REGION_CODES["eye"]] = 0
            regions[eyes & mask] = REGION_CODES["eye"]
        return cls(res, mask, kpt, weight, tri, canonical, source="prnet-official", regions=regions)


def _official_eye_mask(folder: Path, resolution: int) -> np.ndarray | None:
    """(R, R) bool where uv_face_eyes.png differs from uv_face.png (grey levels), or None when absent."""
    from PIL import Image

    paths = [folder / "uv_face_eyes.png", folder / "uv_face.png"]
    if not all(p.is_file() for p in paths):
        return None
    try:
        eyes, face = (np.asarray(Image.open(p).convert("L"), np.int16) for p in paths)
    except OSError as exc:
        raise InputError(f"{folder}: cannot read uv_face_eyes.png / uv_face.png ({exc})") from None
    if eyes.shape != (resolution, resolution) or face.shape != eyes.shape:
        raise InputError(f"{folder}: uv_face_eyes.png {eyes.shape} and uv_face.png {face.shape} must be "
                         f"({resolution}, {resolution})")
    return eyes != face


def regions_from_weight_mask(weight_mask: np.ndarray, face_mask: np.ndarray, uv_kpt_ind: np.ndarray) -> np.ndarray:
    """(R, R) int8 region labels (``REGION_CODES``) from a loss weight mask and the landmark pixels.

    The eyes-nose-mouth pixels of the weight mask (weight 4/16 and the landmarks inside them;
    stray specks of fewer than 20 pixels dropped) go to the region of the nearest landmark:
    brows and eyes -> eye, 27-35 -> nose, 48-67 -> mouth.
    """
    from scipy import ndimage

    w = np.asarray(weight_mask, np.float32)
    # between the face (3/16) and region (4/16) weights
    region = np.asarray(face_mask, bool) & (w >= 0.5 * (WEIGHT_FACE + WEIGHT_REGION))
    lab, n = ndimage.label(region)
    if n:
        sizes = ndimage.sum(region, lab, np.arange(1, n + 1))
        region &= np.isin(lab, 1 + np.flatnonzero(sizes >= 20))
    rows, cols = np.nonzero(region)
    best = np.full(rows.size, np.inf)
    labels = np.zeros(rows.size, np.int8)
    kc, kr = np.asarray(uv_kpt_ind)
    for name, idx in _REGION_LANDMARKS.items():
        d = np.min((rows[:, None] - kr[idx][None]) ** 2 + (cols[:, None] - kc[idx][None]) ** 2, axis=1)
        nearer = d < best
        best[nearer] = d[nearer]
        labels[nearer] = REGION_CODES[name]
    out = np.zeros(w.shape, np.int8)
    out[rows, cols] = labels
    return out


def _read_int_txt(path: Path) -> np.ndarray:
    try:
        a = np.loadtxt(path, ndmin=1)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: expected whitespace-separated integers ({exc})") from None
    if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
        raise InputError(f"{path}: expected integers")
    return a.astype(np.int64)


def _load_mask(mask: np.ndarray | str | Path, resolution: int) -> np.ndarray:
    if isinstance(mask, (str, Path)):
        from PIL import Image

        try:
            arr = np.asarray(Image.open(mask).convert("L"))
        except (OSError, FileNotFoundError) as exc:
            raise InputError(f"{mask}: cannot read face mask image ({exc})") from None
    else:
        arr = np.asarray(mask)
    if arr.shape != (resolution, resolution):
        raise InputError(f"face mask: expected ({resolution}, {resolution}), got {arr.shape}")
    return arr > 0


def load_uv_layout(spec: str | Path | None, model: MorphableModel | None = None,
                   resolution: int = RESOLUTION) -> UVLayout:
    """Resolve a ``--uv-data`` value: an official uv-data folder, a saved ``.npz`` layout, or None
    (derive it from ``model``)."""
    if spec:
        p = Path(spec)
        if p.is_dir():
            return UVLayout.from_prnet_folder(p)
        return UVLayout.load(p)
    if model is None:
        raise InputError("a UV layout needs either --uv-data or a morphable model")
    return UVLayout.from_model(model, resolution)
