"""Morphable models: one API for face3d ``BFM.mat``, the mean-only BFM and the synthetic model.

Array conventions (face3d / BFM): means are (3n,) interleaved x, y, z; bases are (3n, k);
standard deviations are (k,). Parameters are *raw* coefficients as stored in 300W-LP
``Shape_Para`` / ``Exp_Para`` (vertices = mean + basis·para, no scaling by the std), so the
real fits plug in unchanged. Indices are 0-based in memory and 1-based in ``.mat`` files.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import scipy.io

from prnet_keras.errors import InputError

REGION_NAMES = ("nose", "eye", "mouth")


def _is_zero(a: np.ndarray) -> bool:
    return a.size == 0 or (a.strides and 0 in a.strides) or not np.any(a)


@dataclasses.dataclass(eq=False)
class MorphableModel:
    """A linear 3D morphable face model.

    Attributes (n vertices, T triangles):
      shape_mu (3n,) float32; shape_pc (3n, n_shape); shape_ev (n_shape,) standard deviations
      exp_mu (3n,); exp_pc (3n, n_exp); exp_ev (n_exp,)
      tex_mu (3n,) colours in 0..255; tex_pc (3n, n_tex); tex_ev (n_tex,)
      triangles (T, 3) int32 0-based face triangles; mouth_triangles (M, 3) int32 (may be empty)
      kpt_ind (68,) int64 0-based vertex indices of the 68 landmarks
      uv_coords (n, 2) float32 in [0, 1] (u right, v up)
      regions dict name -> (n,) bool for "nose", "eye", "mouth" when known
    """

    name: str
    shape_mu: np.ndarray
    shape_pc: np.ndarray
    shape_ev: np.ndarray
    exp_mu: np.ndarray
    exp_pc: np.ndarray
    exp_ev: np.ndarray
    tex_mu: np.ndarray
    tex_pc: np.ndarray
    tex_ev: np.ndarray
    triangles: np.ndarray
    mouth_triangles: np.ndarray
    kpt_ind: np.ndarray
    uv_coords: np.ndarray
    regions: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        n3 = self.shape_mu.size
        if n3 % 3:
            raise InputError(f"{self.name}: shapeMU length {n3} is not a multiple of 3")
        n = n3 // 3
        for key, pc in (("shapePC", self.shape_pc), ("expPC", self.exp_pc), ("texPC", self.tex_pc)):
            if np.ndim(pc) != 2:
                raise InputError(f"{self.name}: {key} has shape {np.shape(pc)}, expected ({n3}, k)")
        checks = {
            "shapeMU": (self.shape_mu.reshape(-1).shape, (n3,)),
            "expMU": (self.exp_mu.reshape(-1).shape, (n3,)),
            "texMU": (self.tex_mu.reshape(-1).shape, (n3,)),
            "shapePC": (self.shape_pc.shape[:1], (n3,)),
            "expPC": (self.exp_pc.shape[:1], (n3,)),
            "texPC": (self.tex_pc.shape[:1], (n3,)),
            "shapeEV": (self.shape_ev.reshape(-1).shape, (self.shape_pc.shape[1],)),
            "expEV": (self.exp_ev.reshape(-1).shape, (self.exp_pc.shape[1],)),
            "texEV": (self.tex_ev.reshape(-1).shape, (self.tex_pc.shape[1],)),
            "kpt_ind": (self.kpt_ind.reshape(-1).shape, (68,)),
            "uv_coords": (self.uv_coords.shape, (n, 2)),
        }
        for key, (got, want) in checks.items():
            if tuple(got) != tuple(want):
                raise InputError(f"{self.name}: {key} has shape {tuple(got)}, expected {tuple(want)}")
        for key, tri in (("tri", self.triangles), ("tri_mouth", self.mouth_triangles)):
            if tri.size and (tri.ndim != 2 or tri.shape[1] != 3 or tri.min() < 0 or tri.max() >= n):
                raise InputError(f"{self.name}: {key} must be (T, 3) vertex indices in [0, {n}), got shape {tri.shape}")
        if self.kpt_ind.min() < 0 or self.kpt_ind.max() >= n:
            raise InputError(f"{self.name}: kpt_ind must index vertices in [0, {n})")
        self.shape_mu = self.shape_mu.reshape(-1).astype(np.float32)
        self.exp_mu = self.exp_mu.reshape(-1).astype(np.float32)
        self.tex_mu = self.tex_mu.reshape(-1).astype(np.float32)
        self.shape_ev = self.shape_ev.reshape(-1).astype(np.float32)
        self.exp_ev = self.exp_ev.reshape(-1).astype(np.float32)
        self.tex_ev = self.tex_ev.reshape(-1).astype(np.float32)
        self.triangles = self.triangles.astype(np.int32)
        self.mouth_triangles = self.mouth_triangles.reshape(-1, 3).astype(np.int32)
        self.kpt_ind = self.kpt_ind.reshape(-1).astype(np.int64)
        self.uv_coords = self.uv_coords.astype(np.float32)
        self._mean = (self.shape_mu + self.exp_mu).astype(np.float32)
        self._shape_zero = _is_zero(self.shape_pc)
        self._exp_zero = _is_zero(self.exp_pc)
        self._tex_zero = _is_zero(self.tex_pc)

    # ---- sizes -------------------------------------------------------------------------
    @property
    def n_vertices(self) -> int:
        return self.shape_mu.size // 3

    @property
    def n_shape(self) -> int:
        return self.shape_pc.shape[1]

    @property
    def n_exp(self) -> int:
        return self.exp_pc.shape[1]

    @property
    def n_tex(self) -> int:
        return self.tex_pc.shape[1]

    @property
    def all_triangles(self) -> np.ndarray:
        """Face plus mouth triangles (T + M, 3): what renderers draw."""
        if self.mouth_triangles.size:
            return np.concatenate([self.triangles, self.mouth_triangles], 0)
        return self.triangles

    # ---- evaluation --------------------------------------------------------------------
    def _para(self, para: np.ndarray | None, k: int, key: str) -> np.ndarray | None:
        if para is None:
            return None
        p = np.asarray(para, dtype=np.float32).reshape(-1)
        if p.size != k:
            raise InputError(f"{key}: expected {k} coefficients for model {self.name!r}, got {p.size}")
        if not np.all(np.isfinite(p)):
            raise InputError(f"{key}: contains NaN or inf")
        return p

    def vertices(self, shape_para: np.ndarray | None = None, exp_para: np.ndarray | None = None) -> np.ndarray:
        """Model-frame vertices (n, 3) float32: shapeMU + expMU + shapePC·sp + expPC·ep."""
        v = self._mean.copy()
        sp = self._para(shape_para, self.n_shape, "Shape_Para")
        ep = self._para(exp_para, self.n_exp, "Exp_Para")
        if sp is not None and not self._shape_zero and np.any(sp):
            v += self.shape_pc @ sp
        if ep is not None and not self._exp_zero and np.any(ep):
            v += self.exp_pc @ ep
        return v.reshape(-1, 3)

    def keypoint_vertices(self, shape_para: np.ndarray | None = None, exp_para: np.ndarray | None = None) -> np.ndarray:
        """The 68 keypoints of :meth:`vertices` (68, 3) float32, without computing the other vertices."""
        rows = (3 * np.asarray(self.kpt_ind, np.int64)[:, None] + np.arange(3)).reshape(-1)
        v = self._mean[rows].copy()
        sp = self._para(shape_para, self.n_shape, "Shape_Para")
        ep = self._para(exp_para, self.n_exp, "Exp_Para")
        if sp is not None and not self._shape_zero and np.any(sp):
            v += self.shape_pc[rows] @ sp
        if ep is not None and not self._exp_zero and np.any(ep):
            v += self.exp_pc[rows] @ ep
        return v.reshape(-1, 3)

    def vertices_batch(self, shape_paras: np.ndarray, exp_paras: np.ndarray) -> np.ndarray:
        """(B, n_shape), (B, n_exp) -> (B, n, 3) float32 in one GEMM (much faster than B calls)."""
        sp = np.asarray(shape_paras, dtype=np.float32).reshape(-1, self.n_shape)
        ep = np.asarray(exp_paras, dtype=np.float32).reshape(-1, self.n_exp)
        out = np.repeat(self._mean[None], sp.shape[0], 0)
        if not self._shape_zero:
            out += (self.shape_pc @ sp.T).T
        if not self._exp_zero:
            out += (self.exp_pc @ ep.T).T
        return out.reshape(sp.shape[0], -1, 3)

    def colors(self, tex_para: np.ndarray | None = None) -> np.ndarray:
        """Per-vertex colours (n, 3) float32 in [0, 1] (texMU + texPC·tp, stored as 0..255)."""
        c = self.tex_mu.copy()
        tp = self._para(tex_para, self.n_tex, "Tex_Para")
        if tp is not None and not self._tex_zero and np.any(tp):
            c += self.tex_pc @ tp
        return np.clip(c.reshape(-1, 3) / 255.0, 0.0, 1.0).astype(np.float32)

    def region_labels(self) -> np.ndarray:
        """(n,) int8: 0 rest of face, 1 nose, 2 eye, 3 mouth (what the loss weight mask uses)."""
        labels = np.zeros(self.n_vertices, np.int8)
        for i, name in enumerate(REGION_NAMES, start=1):
            if name in self.regions:
                labels[self.regions[name]] = i
        return labels


# ---- face3d BFM.mat ------------------------------------------------------------------------
# Required face3d struct fields and the shape each must have (n vertices, k components).
_BFM_KEYS = {
    "shapeMU": "(3n, 1) mean shape", "shapePC": "(3n, k) identity basis", "shapeEV": "(k, 1) identity std devs",
    "expMU": "(3n, 1) mean expression", "expPC": "(3n, k) expression basis", "expEV": "(k, 1) expression std devs",
    "texMU": "(3n, 1) mean texture", "texPC": "(3n, k) texture basis", "texEV": "(k, 1) texture std devs",
    "tri": "(3, T) 1-based triangles", "kpt_ind": "(1, 68) 1-based landmark vertices",
}


def _triangles_from_mat(a: np.ndarray, key: str, source: str) -> np.ndarray:
    a = np.asarray(a)
    if a.size == 0:
        return np.zeros((0, 3), np.int32)
    if a.ndim != 2 or 3 not in a.shape:
        raise InputError(f"{source}: {key} has shape {a.shape}, expected (3, T) or (T, 3) 1-based indices")
    tri = a.T if a.shape[0] == 3 and a.shape[1] != 3 else a
    return tri.astype(np.int64) - 1


def _mat_struct(path: Path, key: str) -> dict[str, np.ndarray]:
    try:
        mat = scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except Exception as exc:  # scipy raises several types for corrupt files
        raise InputError(f"{path}: not a readable MATLAB .mat file ({exc})") from None
    if key not in mat:
        raise InputError(f"{path}: missing key {key!r}")
    s = mat[key]
    if s.dtype.names is None:
        return {key: s}
    s = s[0, 0]
    return {name: s[name] for name in s.dtype.names}


def load_face3d_bfm(path: str | Path, uv_path: str | Path | None = None, name: str | None = None) -> MorphableModel:
    """Load a face3d-format ``BFM.mat`` (struct ``model``) plus its UV coordinates.

    UV comes from a ``uv_coords`` field inside the struct (files written by
    :func:`save_face3d_bfm`), else ``uv_path``, else ``BFM_UV.mat`` beside the file.
    """
    path = Path(path)
    m = _mat_struct(path, "model")
    for key, expected in _BFM_KEYS.items():
        if key not in m:
            raise InputError(f"{path}: model struct is missing key {key!r} (expected {expected})")
    n3 = np.asarray(m["shapeMU"]).size
    for key in ("shapePC", "expPC", "texPC"):
        if np.asarray(m[key]).ndim != 2 or m[key].shape[0] != n3:
            raise InputError(f"{path}: {key} has shape {np.shape(m[key])}, expected ({n3}, k)")
    if "uv_coords" in m:
        uv = np.asarray(m["uv_coords"], np.float32)
    else:
        uvp = Path(uv_path) if uv_path else path.with_name("BFM_UV.mat")
        if not uvp.exists():
            raise InputError(f"{path}: no UV coordinates: pass uv_path or put BFM_UV.mat beside it ({uvp} not found)")
        uv = np.asarray(_mat_struct(uvp, "UV")["UV"], np.float32)
    if uv.ndim != 2 or uv.shape[1] < 2:
        raise InputError(f"{path}: UV coordinates have shape {uv.shape}, expected (n, 2)")
    uv = uv[:, :2]
    regions = {}
    if "segbin" in m:
        seg = np.asarray(m["segbin"]).astype(bool)
        seg = seg if seg.ndim == 2 and seg.shape[0] == 4 else seg.T
        if seg.ndim != 2 or seg.shape != (4, n3 // 3):
            raise InputError(f"{path}: segbin has shape {np.shape(m['segbin'])}, expected (4, {n3 // 3})")
        regions = {nm: seg[i] for i, nm in enumerate(REGION_NAMES)}
    nm = name or (str(m["name"][0]) if "name" in m and m["name"].size else path.stem)
    try:
        return _model_from_struct(m, nm, uv, regions, nm)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def _model_from_struct(m: dict, nm: str, uv: np.ndarray, regions: dict, source: str) -> MorphableModel:
    return MorphableModel(
        name=nm,
        shape_mu=np.asarray(m["shapeMU"]), shape_pc=np.asarray(m["shapePC"], np.float32),
        shape_ev=np.asarray(m["shapeEV"]),
        exp_mu=np.asarray(m["expMU"]), exp_pc=np.asarray(m["expPC"], np.float32), exp_ev=np.asarray(m["expEV"]),
        tex_mu=np.asarray(m["texMU"]), tex_pc=np.asarray(m["texPC"], np.float32), tex_ev=np.asarray(m["texEV"]),
        triangles=_triangles_from_mat(m["tri"], "tri", source),
        mouth_triangles=_triangles_from_mat(m.get("tri_mouth", np.zeros((0, 3))), "tri_mouth", source),
        kpt_ind=np.asarray(m["kpt_ind"]).reshape(-1).astype(np.int64) - 1,
        uv_coords=uv,
        regions=regions,
    )


def save_face3d_bfm(model: MorphableModel, path: str | Path) -> None:
    """Write ``model`` as a face3d-format ``BFM.mat`` (1-based, 3 x T triangles) plus ``BFM_UV.mat``.

    Extra struct fields ``uv_coords``, ``segbin`` and ``name`` make the file self-contained.
    """
    from prnet_keras.utils import atomic_path

    path = Path(path)
    seg = np.stack([model.regions.get(nm, np.zeros(model.n_vertices, bool)) for nm in REGION_NAMES]
                   + [np.zeros(model.n_vertices, bool)]).astype(np.uint8)
    struct = {
        "shapeMU": model.shape_mu[:, None], "shapePC": np.ascontiguousarray(model.shape_pc),
        "shapeEV": model.shape_ev[:, None],
        "expMU": model.exp_mu[:, None], "expPC": np.ascontiguousarray(model.exp_pc), "expEV": model.exp_ev[:, None],
        "texMU": model.tex_mu[:, None], "texPC": np.ascontiguousarray(model.tex_pc), "texEV": model.tex_ev[:, None],
        "tri": (model.triangles.T + 1).astype(np.int32),
        "tri_mouth": (model.mouth_triangles.T + 1).astype(np.int32),
        "kpt_ind": (model.kpt_ind + 1).astype(np.int32)[None],
        "uv_coords": model.uv_coords.astype(np.float64),
        "segbin": seg,
        "name": np.array([model.name]),
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            scipy.io.savemat(f, {"model": struct}, do_compression=True)
    with atomic_path(path.with_name("BFM_UV.mat")) as tmp:
        with open(tmp, "wb") as f:
            scipy.io.savemat(f, {"UV": model.uv_coords.astype(np.float64)})


# ---- mean-only BFM from the public pieces --------------------------------------------------
def load_mean_bfm(folder: str | Path, n_shape: int = 199, n_exp: int = 29, n_tex: int = 199) -> MorphableModel:
    """The BFM *mean* geometry (53,215 vertices) with zero identity/expression bases.

    ``folder`` holds ``u_shp.npy``, ``u_exp.npy``, ``tri.mat``, ``BFM_UV.mat`` and
    ``BFM_info.mat`` (docs/conventions.md lists their keys). Bases are zero arrays of
    the real dimensions (stored as read-only broadcasts, no memory), std devs are 1, and
    the texture is a uniform skin tone: the real topology, UV, keypoints and regions.
    """
    folder = Path(folder)
    need = ["u_shp.npy", "u_exp.npy", "tri.mat", "BFM_UV.mat", "BFM_info.mat"]
    missing = [f for f in need if not (folder / f).exists()]
    if missing:
        raise InputError(f"{folder}: not a mean-only BFM folder, missing {', '.join(missing)}")
    u_shp = np.load(folder / "u_shp.npy").reshape(-1)
    u_exp = np.load(folder / "u_exp.npy").reshape(-1)
    if u_shp.shape != u_exp.shape or u_shp.size % 3:
        raise InputError(f"{folder}: u_shp.npy {u_shp.shape} and u_exp.npy {u_exp.shape} must be equal (3n,) arrays")
    n3 = u_shp.size
    tri = _triangles_from_mat(_mat_struct(folder / "tri.mat", "tri")["tri"], "tri", str(folder / "tri.mat"))
    uv = np.asarray(_mat_struct(folder / "BFM_UV.mat", "UV")["UV"], np.float32)[:, :2]
    info = _mat_struct(folder / "BFM_info.mat", "model_info")
    for key in ("kpt_ind", "segbin", "tri_mouth"):
        if key not in info:
            raise InputError(f"{folder / 'BFM_info.mat'}: model_info is missing key {key!r}")
    seg = np.asarray(info["segbin"]).astype(bool)
    seg = seg if seg.shape[0] == 4 else seg.T
    zeros = lambda k: np.broadcast_to(np.float32(0), (n3, k))  # noqa: E731
    skin = np.tile(np.array([200.0, 160.0, 140.0], np.float32), n3 // 3)
    return MorphableModel(
        name="bfm-mean",
        shape_mu=u_shp, shape_pc=zeros(n_shape), shape_ev=np.ones(n_shape),
        exp_mu=u_exp, exp_pc=zeros(n_exp), exp_ev=np.ones(n_exp),
        tex_mu=skin, tex_pc=zeros(n_tex), tex_ev=np.ones(n_tex),
        triangles=tri,
        mouth_triangles=_triangles_from_mat(info["tri_mouth"], "tri_mouth", str(folder / "BFM_info.mat")),
        kpt_ind=np.asarray(info["kpt_ind"]).reshape(-1).astype(np.int64) - 1,
        uv_coords=uv,
        regions={nm: seg[i] for i, nm in enumerate(REGION_NAMES)},
    )
