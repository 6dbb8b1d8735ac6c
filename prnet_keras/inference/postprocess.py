"""From a predicted position map to a :class:`Face`: mesh, landmarks, colours, visibility,
pose, depth, texture.

Frames (all float32 pixels):

* crop frame: the network's output × LABEL_SCALE, x right / y down in the 256² crop, z
  larger = nearer, re-based to min 0 as in training;
* image frame (``Face.vertices``, ``Face.keypoints``, ``Face.position_map``): x, y =
  T⁻¹·[x', y', 1] in the input image (y down), z = z' / k (image pixels, larger = nearer);
* camera frame (pose, ``.mat`` meshes): y flipped, y_cam = h - 1 - y_img (y up);
* canonical frame (``Face.frontalized_vertices``): the layout's frontal reference face, y up.

Depth, visibility and texture are computed lazily on first use and cached.
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property

import cv2
import numpy as np

from prnet_keras.errors import InputError
from prnet_keras.geometry import (
    UVLayout, camera_matrix, crop_to_image, rasterize, rms_residual, rotation_to_angles, transform_scale, umeyama,
    vertex_visibility,
)
from prnet_keras.inference.detect import Detection


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def helper_pool() -> ThreadPoolExecutor:
    """The process-wide 2-thread pool that post-processing and writers overlap work on.

    The heavy parts (numba rasterisation, OpenCV, BLAS, PNG/zlib, file writes) release the
    GIL, so two of them run at once on two cores.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prnet-post")
        return _POOL


def in_helper_thread() -> bool:
    return threading.current_thread().name.startswith("prnet-post")


@dataclasses.dataclass(frozen=True)
class FacePose:
    """Similarity pose V_cam ≈ scale·R·V_canonical + t (3DDFA convention, V' = s·V·Rᵀ + t).

    angles_deg (3,) [pitch, yaw, roll] degrees (R = Rx·Ry·Rz as in geometry.pose);
    rotation (3, 3); scale (image px per canonical unit); translation (3,) camera frame px;
    camera_matrix (3, 4) = [s·R | t]; rms_px: RMS residual of the fit in image pixels.
    """

    angles_deg: np.ndarray
    rotation: np.ndarray
    scale: float
    translation: np.ndarray
    camera_matrix: np.ndarray
    rms_px: float

    def to_dict(self) -> dict:
        return {
            "frame": "camera (x right, y up = h-1-y_image, z toward viewer), pixels",
            "convention": "3DDFA: R = Rx(pitch) Ry(yaw) Rz(roll); V_cam = s * V_canonical @ R.T + t",
            "pitch_deg": float(self.angles_deg[0]), "yaw_deg": float(self.angles_deg[1]),
            "roll_deg": float(self.angles_deg[2]),
            "rotation": np.asarray(self.rotation, float).tolist(), "scale": float(self.scale),
            "translation": np.asarray(self.translation, float).tolist(),
            "camera_matrix": np.asarray(self.camera_matrix, float).tolist(), "rms_px": float(self.rms_px),
        }


def estimate_pose(vertices_img: np.ndarray, canonical: np.ndarray, image_height: int) -> FacePose:
    """Umeyama similarity from the canonical face (y up) to the image-frame vertices flipped to y up."""
    cam = np.asarray(vertices_img, np.float64).copy()
    cam[:, 1] = image_height - 1 - cam[:, 1]
    s, rot, t = umeyama(canonical, cam)
    rms = rms_residual(canonical, cam, s, rot, t)
    angles = np.degrees(rotation_to_angles(rot))
    return FacePose(angles, rot, float(s), t, camera_matrix(s, rot, t), rms)


@dataclasses.dataclass(eq=False)
class Face:
    """One reconstructed face.

    crop_map (R, R, 3) float32 crop pixels; position_map (R, R, 3) float32 image frame;
    transform (3, 3) image → crop; crop_box (cx, cy, size) image pixels; image_size (h, w);
    layout the UV layout; image the RGB uint8 (h, w, 3) it came from (kept for colours and
    texture; never modified).
    """

    crop_map: np.ndarray
    position_map: np.ndarray
    transform: np.ndarray
    crop_box: tuple[float, float, float]
    image_size: tuple[int, int]
    layout: UVLayout
    image: np.ndarray | None = dataclasses.field(default=None, repr=False)
    detection: Detection | None = None

    # ---- geometry -------------------------------------------------------------------------
    @cached_property
    def vertices(self) -> np.ndarray:
        """(N, 3) float32 image frame (x, y pixels, y down; z larger = nearer)."""
        return np.ascontiguousarray(self.layout.vertices_from_map(self.position_map), np.float32)

    @cached_property
    def keypoints(self) -> np.ndarray:
        """(68, 3) float32 landmarks, image frame."""
        return np.ascontiguousarray(self.layout.keypoints_from_map(self.position_map), np.float32)

    @property
    def triangles(self) -> np.ndarray:
        """(T, 3) int32 0-based indices into ``vertices``."""
        return self.layout.triangles

    @cached_property
    def keypoint_indices(self) -> np.ndarray:
        """(68,) int64 indices into ``vertices`` of the landmark pixels (nearest face pixel if outside)."""
        face_ind = self.layout.face_ind
        kf = self.layout.kpt_flat
        idx = np.clip(np.searchsorted(face_ind, kf), 0, face_ind.size - 1)
        miss = face_ind[idx] != kf
        if np.any(miss):  # custom layouts may put a landmark outside the face mask
            r = self.layout.resolution
            rows, cols = np.divmod(face_ind, r)
            for j in np.flatnonzero(miss):
                kr, kc = divmod(int(kf[j]), r)
                idx[j] = int(np.argmin((rows - kr) ** 2 + (cols - kc) ** 2))
        return idx.astype(np.int64)

    @property
    def camera_vertices(self) -> np.ndarray:
        """(N, 3) float32 camera frame: y up (y = h - 1 - y_image), as in the ``.mat`` meshes."""
        v = self.vertices.copy()
        v[:, 1] = self.image_size[0] - 1 - v[:, 1]
        return v

    # ---- appearance -----------------------------------------------------------------------
    def _need_image(self, what: str) -> np.ndarray:
        if self.image is None:
            raise InputError(f"face {what}: this face was made without its image")
        return self.image

    @cached_property
    def colors(self) -> np.ndarray:
        """(N, 3) float32 RGB in [0, 1]: the image at each vertex's rounded, clamped (x, y).

        The vertices themselves are not modified (the official code clamps them in place).
        """
        img = self._need_image("colours")
        h, w = img.shape[:2]
        cols = np.clip(np.rint(self.vertices[:, 0]), 0, w - 1).astype(np.intp)
        rows = np.clip(np.rint(self.vertices[:, 1]), 0, h - 1).astype(np.intp)
        return img[rows, cols].astype(np.float32) / 255.0

    @cached_property
    def _zbuffer(self) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.image_size
        _, depth, tri_index = rasterize(self.vertices, self.triangles,
                                        np.zeros((self.vertices.shape[0], 0), np.float32), h, w)
        return depth, tri_index >= 0

    @property
    def depth_image(self) -> np.ndarray:
        """(h, w) float32 z-buffer of the mesh in image pixels (larger = nearer), 0 where empty."""
        return self._zbuffer[0]

    @property
    def depth_mask(self) -> np.ndarray:
        """(h, w) bool: pixels covered by the mesh."""
        return self._zbuffer[1]

    @cached_property
    def visibility(self) -> np.ndarray:
        """(N,) bool: vertex inside the image and not hidden behind the mesh (z-buffer test,
        ``geometry.vertex_visibility``: tolerance 1 % of the z range, at least 0.5 px); the
        z-buffer is the one of ``depth_image`` (rendered once for both)."""
        h, w = self.image_size
        return vertex_visibility(self.vertices, self.triangles, h, w, zbuffer=self._zbuffer)

    def texture(self, size: int | None = None, visibility_mask: bool = False) -> np.ndarray:
        """UV texture map (size, size, 3) uint8 RGB: ``cv2.remap`` of the image at the map's (x, y).

        size defaults to the layout resolution; ``visibility_mask`` blacks out UV pixels whose
        vertex is hidden (and everything outside the face region).
        """
        img = self._need_image("texture")
        r = self.layout.resolution
        size = r if size is None else int(size)
        if size < 8 or size > 4096:
            raise InputError(f"texture size: expected 8..4096 pixels, got {size}")
        xy = np.ascontiguousarray(self.position_map[..., :2], np.float32)
        if size != r:
            # Outside the face the map holds no face position: extend the face's own values
            # outward first, else resampling blends them into the border texels.
            xy = xy.reshape(-1, 2)[self.layout.nearest_face_index].reshape(r, r, 2)
            xy = cv2.resize(xy, (size, size), interpolation=cv2.INTER_LINEAR)
        tex = cv2.remap(img, xy[..., 0], xy[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if visibility_mask:
            mask = np.zeros(r * r, np.uint8)
            mask[self.layout.face_ind] = self.visibility
            mask = mask.reshape(r, r)
            if size != r:
                mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
            tex = tex * mask[..., None]
        return tex

    def prepare(self, parts: tuple[str, ...] = ("keypoints", "colors", "visibility", "pose")) -> "Face":
        """Compute cached ``parts`` now: the z-buffer chain (``depth_image``, ``visibility``)
        on a helper thread while the rest (``keypoints``, ``colors``, ``pose``, ...) runs here.

        Same values as lazy access; ~35 % less wall time for the full set on 2 cores.
        """
        _ = self.vertices  # everything derives from it
        if self.image is None:
            parts = tuple(p for p in parts if p != "colors")
        zchain = [p for p in parts if p in ("depth_image", "visibility")]
        rest = [p for p in parts if p not in zchain]
        future = None
        if zchain and not in_helper_thread():  # a helper waiting on the pool could deadlock it
            future = helper_pool().submit(lambda: [getattr(self, p) for p in zchain])
        else:
            rest = zchain + rest
        for p in rest:
            getattr(self, p)
        if future is not None:
            future.result()
        return self

    # ---- pose -----------------------------------------------------------------------------
    @cached_property
    def pose(self) -> FacePose:
        """Pose from an Umeyama fit of the layout's canonical face to these vertices."""
        return estimate_pose(self.vertices, self.layout.canonical_vertices, self.image_size[0])

    @cached_property
    def frontalized_vertices(self) -> np.ndarray:
        """(N, 3) float32: the vertices with the pose undone, canonical frame (y up), canonical units."""
        p = self.pose
        return ((self.camera_vertices - p.translation) @ p.rotation / p.scale).astype(np.float32)

    # ---- serialisation --------------------------------------------------------------------
    def to_dict(self, vertices: bool = False) -> dict:
        """JSON-safe summary (plain Python types): box, landmarks, pose; ``vertices`` adds the mesh."""
        cx, cy, size = self.crop_box
        out = {
            "crop_box": {"cx": float(cx), "cy": float(cy), "size": float(size)},
            "detection": None if self.detection is None else self.detection.to_dict(),
            "image_size": [int(self.image_size[0]), int(self.image_size[1])],
            "frame": "image pixels, x right, y down, z toward viewer (larger = nearer)",
            "keypoints": self.keypoints.astype(float).tolist(),
            "pose": self.pose.to_dict(),
            "n_vertices": int(self.vertices.shape[0]),
            "n_triangles": int(self.triangles.shape[0]),
        }
        if vertices:
            out["vertices"] = self.vertices.astype(float).tolist()
            out["triangles"] = self.triangles.astype(int).tolist()
        return out


def face_from_position_map(
    position_map_crop_px: np.ndarray,
    transform: np.ndarray,
    layout: UVLayout,
    image: np.ndarray | None,
    detection: Detection | None = None,
    image_size: tuple[int, int] | None = None,
) -> Face:
    """Crop-pixel position map (R, R, 3) + image→crop transform -> :class:`Face` in image frame.

    x, y = T⁻¹·[x', y', 1]; z = z' / k. ``image`` (RGB uint8) is needed for colours/texture;
    without it pass ``image_size`` (h, w).
    """
    pm = np.asarray(position_map_crop_px, np.float32)
    r = layout.resolution
    if pm.shape != (r, r, 3):
        raise InputError(f"position map: expected ({r}, {r}, 3), got {pm.shape}")
    t = np.asarray(transform, np.float64)
    if t.shape != (3, 3):
        raise InputError(f"transform: expected (3, 3), got {t.shape}")
    if image is not None:
        image_size = (int(image.shape[0]), int(image.shape[1]))
    elif image_size is None:
        raise InputError("face_from_position_map: give the image or image_size")
    img_map = crop_to_image(pm.reshape(-1, 3), t).reshape(r, r, 3)
    size = (r - 1) / transform_scale(t)
    centre = crop_to_image(np.array([[(r - 1) / 2.0, (r - 1) / 2.0]]), t)[0]
    return Face(pm, img_map, t, (float(centre[0]), float(centre[1]), float(size)), image_size, layout, image, detection)
