"""In-plane rotation of samples (300W-LP-Rotate): images and their fits, rotated consistently.

An angle a (degrees, positive = counter-clockwise as the image is displayed) rotates the image
about its centre ((w-1)/2, (h-1)/2) on the same canvas; the border is filled by reflection
(``reflect``, OpenCV's BORDER_REFLECT_101: no hard edge for the network to learn) or a
constant grey level (``constant``). Image points move by the same 2x3 matrix. In the camera
frame (y up) that is a rotation Q by +a about the viewing axis through the centre c, so a fit
becomes R' = Q·R, t' = Q·(t - c) + c (scale kept): the posed model lands exactly on the rotated
image. R' is decomposed again into 3DDFA angles, so for a face that is not frontal the pitch
and yaw of ``Pose_Para`` change too, not only its roll.

Rotated files are named ``<name>_angle_<a>`` (``AFW_1051618982_1_0_angle_15.jpg``,
``..._angle_-15``) in the sample's own folder (``AFW_Flip/...`` stays in ``AFW_Flip``); angle 0
is the original sample under its own name.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from prnet_keras.data.jobs import JobSummary, run_folder_job
from prnet_keras.data.sources import Fit, SampleRef, decode_image, list_samples, load_mat_bytes, read_sample_bytes
from prnet_keras.data.synth import mat_bytes, roi_box
from prnet_keras.errors import InputError
from prnet_keras.geometry import make_pose_para, parse_pose_para, rotation_to_angles
from prnet_keras.utils import atomic_write_bytes

BORDERS = {"reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT}
DEFAULT_ANGLES = (15.0, 30.0, 45.0, 60.0, -15.0, -30.0, -45.0, -60.0)


@dataclasses.dataclass(frozen=True)
class RotatedRef(SampleRef):
    """A sample to be read rotated by ``angle`` degrees (its name carries the suffix)."""

    angle: float = 0.0


# ---- angles and names --------------------------------------------------------------------------
def parse_angles(spec: str | Sequence[float]) -> list[float]:
    """``"15,30,-15"`` (or numbers) -> distinct angles in degrees, each in [-180, 180]."""
    try:
        values = [float(v) for v in (spec.split(",") if isinstance(spec, str) else spec) if str(v).strip() != ""]
    except ValueError:
        raise InputError(f"--angles {spec}: expected comma-separated degrees, e.g. 15,30,-15") from None
    if not values:
        raise InputError(f"--angles {spec}: no angle given")
    for a in values:
        if not (np.isfinite(a) and -180.0 <= a <= 180.0):
            raise InputError(f"--angles {spec}: {a} is not an angle in [-180, 180] degrees")
    if len(set(values)) != len(values):
        raise InputError(f"--angles {spec}: an angle is repeated")
    return values


def angle_suffix(angle: float) -> str:
    """``_angle_15``, ``_angle_-15``, ``_angle_7.5``; "" for 0 (the original)."""
    if angle == 0:
        return ""
    return f"_angle_{int(angle)}" if float(angle).is_integer() else f"_angle_{angle:g}"


def expand_rotations(refs: Sequence[SampleRef], angles: Sequence[float]) -> list[RotatedRef]:
    """Each sample once per angle (in the given order), named with :func:`angle_suffix`."""
    return [RotatedRef(**{**dataclasses.asdict(r), "name": r.name + angle_suffix(a)}, angle=float(a))
            for r in refs for a in angles]


# ---- geometry ----------------------------------------------------------------------------------
def rotation_matrix(angle: float, width: int, height: int) -> np.ndarray:
    """(2, 3) image-frame matrix of the rotation by ``angle`` degrees about the image centre."""
    return cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), float(angle), 1.0)


def rotate_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(n, 2|3) image points through the (2, 3) matrix; z (if any) unchanged. float64."""
    p = np.array(points, np.float64, copy=True)
    p[:, :2] = p[:, :2] @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]
    return p


def rotate_pose_para(pose_para: np.ndarray, angle: float, width: int, height: int) -> np.ndarray:
    """``Pose_Para`` (1, 7) float32 of the same fit on the image rotated by ``angle`` degrees."""
    s, rot, t = parse_pose_para(pose_para)
    a = np.radians(float(angle))
    q = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0, 0.0])  # camera frame: the flip keeps the centre
    return make_pose_para(rotation_to_angles(q @ rot), q @ (t - centre) + centre, s)


def rotate_image(image: np.ndarray, angle: float, border: str = "reflect", border_value: int = 0) -> np.ndarray:
    """The image rotated by ``angle`` degrees about its centre, same size, bilinear."""
    if border not in BORDERS:
        raise InputError(f"--border {border}: expected one of {', '.join(BORDERS)}")
    h, w = image.shape[:2]
    return cv2.warpAffine(image, rotation_matrix(angle, w, h), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=BORDERS[border], borderValue=(int(border_value),) * 3)


def _rotate_pt2d(pt2d: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """pt2d as stored (2xK or Kx2): every point rotated, except the negative 'not visible'
    marks of 21-point AFLW annotations."""
    a = np.asarray(pt2d, np.float64)
    pts = a.T if a.shape[0] == 2 and a.shape[1] != 2 else a
    keep = np.zeros(len(pts), bool) if len(pts) == 68 else (pts < 0).any(1)
    out = rotate_points(pts, matrix)
    out[keep] = pts[keep]
    return (out.T if pts is not a else out).astype(a.dtype)


def rotate_mat(mat: dict[str, np.ndarray], angle: float, width: int, height: int) -> dict[str, np.ndarray]:
    """A 300W-LP / AFLW2000-3D ``.mat`` dict for the rotated image (same keys, order and dtypes).

    Pose_Para and the landmarks (pt2d, pt3d_68) are rotated; roi is recomputed from the rotated
    landmarks; the other keys are copied.
    """
    m = rotation_matrix(angle, width, height)
    out = dict(mat)
    if "Pose_Para" in mat:
        pose = rotate_pose_para(mat["Pose_Para"], angle, width, height)
        out["Pose_Para"] = pose.astype(np.asarray(mat["Pose_Para"]).dtype)
    if "pt2d" in mat:
        out["pt2d"] = _rotate_pt2d(mat["pt2d"], m)
    if "pt3d_68" in mat:
        p = np.asarray(mat["pt3d_68"])
        out["pt3d_68"] = rotate_points(p.T, m).T.astype(p.dtype)
    if "roi" in mat:
        src = out["pt3d_68"].T[:, :2] if "pt3d_68" in out else None
        if src is None and "pt2d" in out and np.asarray(out["pt2d"]).size == 136:
            p2 = np.asarray(out["pt2d"], np.float64)
            src = p2.T if p2.shape[0] == 2 else p2
        if src is not None:
            out["roi"] = roi_box(np.asarray(src, np.float64)).astype(np.asarray(mat["roi"]).dtype)
    return out


def rotate_fit(fit: Fit, angle: float, width: int, height: int) -> Fit:
    """A parsed fit for the rotated image (pose and landmarks rotated)."""
    m = rotation_matrix(angle, width, height)
    return Fit(rotate_pose_para(fit.pose_para, angle, width, height).reshape(7), fit.shape_para, fit.exp_para,
               None if fit.pt3d_68 is None else rotate_points(fit.pt3d_68, m).astype(np.float32),
               None if fit.pt2d is None else _rotate_pt2d(fit.pt2d, m).astype(np.float32))


def rotate_loaded(image: np.ndarray, fit: Fit, angle: float, border: str = "reflect") -> tuple[np.ndarray, Fit]:
    """(image, fit) of a sample, rotated by ``angle`` (the build's ``--rotate``; 0: unchanged)."""
    if angle == 0:
        return image, fit
    h, w = image.shape[:2]
    return rotate_image(image, angle, border), rotate_fit(fit, angle, w, h)


def encode_like(image_rgb: np.ndarray, suffix: str, jpeg_quality: int = 95) -> bytes:
    """Encode as the source file type: PNG for ``.png``, JPEG otherwise."""
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    if suffix.lower() == ".png":
        ok, buf = cv2.imencode(".png", bgr)
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:  # pragma: no cover - OpenCV only fails on invalid arrays
        raise InputError("image encoding failed")
    return buf.tobytes()


# ---- the job -----------------------------------------------------------------------------------
_STATE: dict[str, Any] = {}


def init_rotate_worker(settings: dict, in_pool: bool = False) -> None:
    if in_pool:
        cv2.setNumThreads(1)
    _STATE.update(settings=settings, out=Path(settings["out"]))


def rotate_chunk(task: tuple[int, list[SampleRef]]) -> tuple[int, int, list[tuple[str, str, str]]]:
    """Write every angle of each sample of one chunk; returns (chunk, files written, skipped)."""
    k, refs = task
    st = _STATE["settings"]
    written, skipped = 0, []
    for ref in refs:
        try:
            img_bytes, mbytes = read_sample_bytes(ref)
            image = decode_image(img_bytes, ref.name)
            mat = load_mat_bytes(mbytes, ref.name)
            h, w = image.shape[:2]
            rel = Path(ref.relpath or Path(ref.image_path).name)
            for a in st["angles"]:
                target = rel.with_name(rel.stem + angle_suffix(a) + rel.suffix)
                if a == 0:
                    data, new_mat = img_bytes, mbytes
                else:
                    data = encode_like(rotate_image(image, a, st["border"], st["border_value"]), rel.suffix,
                                       st["jpeg_quality"])
                    new_mat = mat_bytes(rotate_mat(mat, a, w, h))
                atomic_write_bytes(_STATE["out"] / target, data)
                atomic_write_bytes((_STATE["out"] / target).with_suffix(".mat"), new_mat)
                written += 1
        except Exception as exc:
            msg = str(exc).replace("\n", " ").strip()
            skipped.append((ref.name, ref.relpath or ref.image_path,
                            msg if isinstance(exc, InputError) else f"{type(exc).__name__}: {msg}"))
    return k, written, skipped


def rotate_folder(source: str | os.PathLike, out: str | os.PathLike, angles: str | Sequence[float] = DEFAULT_ANGLES,
                  border: str = "reflect", border_value: int = 0, jpeg_quality: int = 95, layout: str = "auto",
                  workers: int = 1, limit: int | None = None, resume: bool = False, overwrite: bool = False,
                  progress: bool = False, chunk_size: int = 16) -> JobSummary:
    """Write every sample of ``source`` rotated by each angle into ``out`` (module docstring).

    Resumable, parallel, skipped samples listed in ``out/skipped.csv``; the summary counts
    written image files (samples x angles).
    """
    angle_list = parse_angles(angles)
    if border not in BORDERS:
        raise InputError(f"--border {border}: expected one of {', '.join(BORDERS)}")
    if not 0 <= int(border_value) <= 255:
        raise InputError(f"--border-value {border_value}: expected a grey level 0..255")
    if not 1 <= int(jpeg_quality) <= 100:
        raise InputError(f"--jpeg-quality {jpeg_quality}: expected 1..100")
    if limit is not None and int(limit) < 1:
        raise InputError(f"--limit {limit}: expected a positive number of samples")
    refs = list_samples(source, layout)
    refs = refs[: int(limit)] if limit else refs
    out = Path(out)
    settings = {"source": str(Path(source).resolve()), "out": str(out.resolve()), "angles": angle_list,
                "border": border, "border_value": int(border_value), "jpeg_quality": int(jpeg_quality),
                "layout": layout, "limit": limit, "chunk_size": int(chunk_size)}
    return run_folder_job(refs, out, settings, workers=int(workers), resume=resume, overwrite=overwrite,
                          progress=progress, init=init_rotate_worker, init_args=(settings,), task=rotate_chunk,
                          chunk_size=int(chunk_size), what="rotated images")


def rotate_for_build(ref: SampleRef, image: np.ndarray, fit: Fit, image_bytes: bytes,
                     settings: dict) -> tuple[np.ndarray, Fit, bytes]:
    """The HDF5 build's ``--rotate`` hook: a :class:`RotatedRef` is read rotated (raw stores
    keep the rotated image as JPEG at the build's quality); other samples pass unchanged."""
    angle = getattr(ref, "angle", 0.0)
    if not angle:
        return image, fit, image_bytes
    image, fit = rotate_loaded(image, fit, angle, settings.get("rotate_border", "reflect"))
    if settings.get("store") == "raw":
        image_bytes = encode_like(image, ".jpg", settings.get("jpeg_quality", 95))
    return image, fit, image_bytes
