"""prnet-predict on the photos people actually have: a phone portrait stored sideways (EXIF
Orientation 6) gives the same face through dataset reading, prnet-predict and the server; a
folder with one bad image skips it with a row and writes the others."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    """An untrained light network (width 0.25) saved as .keras, its UV layout beside it."""
    from prnet_keras.geometry import load_morphable_model, load_uv_layout
    from prnet_keras.model import build_model

    folder = tmp_path_factory.mktemp("model")
    build_model("light", width=0.25).save(folder / "m.keras")
    load_uv_layout(None, load_morphable_model("synthetic")).save(folder / "uv_layout.npz")
    return folder / "m.keras"


def _jpeg(pixels: np.ndarray, orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95, exif=exif)
    return buf.getvalue()


def _box(pose_json) -> np.ndarray:
    box = json.loads(pose_json.read_text())["crop_box"]
    return np.array([box["cx"], box["cy"], box["size"]], float)


def test_exif_rotated_photo_same_face_everywhere(reference_data, tiny_model_file, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from prnet_keras.cli.load_model import main
    from prnet_keras.data.sources import list_samples, read_sample
    from prnet_keras.inference import Predictor, load_image
    from prnet_keras.server.app import create_app
    from prnet_keras.server.settings import ServerSettings

    src = reference_data / "aflw2000-3d"
    upright = load_image(src / "image00050.jpg")[:, 20:430]  # 450 x 410: not square, so a turn shows
    # what a phone writes: the sensor's pixels (turned 90 degrees counter-clockwise) + "rotate 90 CW to view"
    data = tmp_path / "data"
    data.mkdir()
    (data / "image00050.jpg").write_bytes(_jpeg(np.ascontiguousarray(np.rot90(upright, 1)), orientation=6))
    import scipy.io

    mat = scipy.io.loadmat(src / "image00050.mat")
    mat["Pose_Para"][0, 3] -= 20
    for key in ("pt2d", "pt3d_68"):
        mat[key][0] -= 20
    scipy.io.savemat(data / "image00050.mat", {k: v for k, v in mat.items() if not k.startswith("__")})

    # 1. dataset reading: the decoded image is the upright one, so the fit's keypoints land on the face
    image, fit = read_sample(list_samples(data)[0])
    assert image.shape == upright.shape
    assert np.abs(image.astype(int) - upright).mean() < 3
    kpt = fit["pt3d_68"][:2].T
    label_box = np.r_[kpt.min(0), kpt.max(0)]

    # 2. prnet-predict (OpenCV's detector on the decoded photo)
    out = tmp_path / "out"
    rc = main(["--image", str(data / "image00050.jpg"), "--model", str(tiny_model_file), "--detector", "opencv",
               "--outputs", "pose", "--output", str(out), "--cpu", "--engine", "keras"])
    assert rc == 0, capsys.readouterr().err
    cx, cy, size = _box(out / "image00050_0_pose.json")
    assert label_box[0] < cx < label_box[2] and label_box[1] < cy < label_box[3]  # the labelled face
    assert 0.8 < size / np.mean(label_box[2:] - label_box[:2]) < 3

    # 3. the server, same detector
    predictor = Predictor.from_path(tiny_model_file, detector="opencv", engine="keras")
    app = create_app(predictor, ServerSettings(detector="opencv", workers=1))
    with TestClient(app) as client:
        r = client.post("/v1/reconstruct", files={"image": ("p.jpg", (data / "image00050.jpg").read_bytes())})
    assert r.status_code == 200, r.text
    face = r.json()["faces"][0]
    assert r.json()["image"] == {"width": upright.shape[1], "height": upright.shape[0]}
    served = face["crop_box"]
    np.testing.assert_allclose([served["cx"], served["cy"], served["size"]], [cx, cy, size], atol=1e-3)


def test_folder_with_a_bad_image_skips_it_and_writes_the_rest(tiny_model_file, tmp_path, capsys):
    from prnet_keras.cli.load_model import main

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        small = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
        pixels = np.asarray(Image.fromarray(small).resize((64 + 8 * i, 64), Image.BICUBIC))
        (photos / f"p{i}.jpg").write_bytes(_jpeg(pixels))
    (photos / "tiny.png").write_bytes(_png(np.zeros((1, 1, 3), np.uint8)))  # whole-image box would be 0 x 0
    (photos / "zero.jpg").write_bytes(b"")
    (photos / "huge.jpg").write_bytes(_jpeg(np.zeros((100, 120, 3), np.uint8)))  # above --max-image-pixels
    out = tmp_path / "out"
    rc = main(["--input-dir", str(photos), "--model", str(tiny_model_file), "--detector", "none", "--outputs", "kpt",
               "--output", str(out), "--max-image-pixels", "9000", "--cpu", "--engine", "keras"])
    captured = capsys.readouterr()
    assert rc == 1  # some images skipped
    skips = [line for line in captured.err.splitlines() if line.startswith("skip: ")]
    assert len(skips) == 3, captured.err
    assert any("tiny.png" in s and "right <= left" in s for s in skips)
    assert any("zero.jpg" in s and "empty image data" in s for s in skips)
    assert any("huge.jpg" in s and "12000 pixels, more than the limit 9000" in s for s in skips)
    assert sorted(p.name for p in out.glob("*_kpt.txt")) == [f"p{i}_0_kpt.txt" for i in range(6)]
    assert "6 image(s), 6 face(s)" in captured.out and "3 skipped" in captured.out


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()
