"""prnet-texture / demo_texture.py: the official demo's flags, one-line errors, outputs, and real
photos when the reference data is present. (The commands of docs/texture.md, run as written by
tests/docs, load real models: a .keras run folder and an official checkpoint prefix.)"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from prnet_keras.cli import texture
from prnet_keras.edit import swap_faces


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


def _save(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture
def files(tmp_path, scenes):
    (tmp_path / "model.keras").write_bytes(b"never read: the predictor is patched in")
    out = {k: _save(tmp_path / f"{k}.png", scenes[k].image) for k in ("a", "b", "g", "p", "q")}
    out["blank"] = _save(tmp_path / "blank.png", np.full((100, 120, 3), 90, np.uint8))
    out["model"] = tmp_path / "model.keras"
    return out


@pytest.fixture
def patched(monkeypatch, edit_predictor):
    """prnet-texture with the ground-truth predictor in place of a loaded model."""
    import prnet_keras.cli.load_model as lm

    calls = []
    monkeypatch.setattr(lm, "load_predictor", lambda *a, **kw: calls.append(kw) or edit_predictor)
    return calls


def test_flag_errors_are_one_line(files, tmp_path, capsys):
    a, b, model = str(files["a"]), str(files["b"]), str(files["model"])
    base = ["-i", a, "-r", b, "--model", model]
    cases = [
        (base + ["--mode", "1", "--region", "eyes"], "--mode 1 replaces the whole face; to replace eyes use --mode 0"),
        (base + ["--mode", "0", "--region", "face"], "--mode 0 replaces a part of the face"),
        (base + ["-o", str(tmp_path / "out.gif")], "out.gif: expected a .jpg or .png file name"),
        (base + ["--region", "ears"], "--region ears: expected one of eyes, nose, mouth, face or a mask image file"),
        (base + ["--face", "left"], "--face: expected a face index or all, got 'left'"),
        (base + ["--ref-face", "all"], "--ref-face: expected a face index, got 'all'"),
        (["-i", a, "--model", model, "--face", "all"], "--face all: needs a reference image (-r)"),
        (["-i", a, "--model", model, "--ref-bbox", "1,2,30,40"], "--ref-bbox: there is no reference image (-r)"),
        (base + ["--bbox", "5,5,1,1"], "--bbox: expected 'left,top,right,bottom'"),
        (["-i", str(tmp_path / "none.jpg"), "-r", b, "--model", model], "none.jpg"),
        (["-i", a, "-r", b, "--model", str(tmp_path / "nope.keras")], "nope.keras: file not found"),
        (base + ["--mode", "2"], "argument --mode: invalid choice: 2"),
        (["-r", b, "--model", model], "the following arguments are required: -i/--image/--image_path"),
    ]
    for argv, message in cases:
        assert texture.main(argv) == 2, argv
        assert message in _one_error_line(capsys), argv
    assert texture.main(["--help"]) == 0
    assert "--image_path" in capsys.readouterr().out


def test_official_flags_write_the_library_result(files, tmp_path, patched, edit_predictor, capsys):
    out = tmp_path / "out" / "swap.png"
    argv = ["-i", str(files["a"]), "-r", str(files["b"]), "-o", str(out), "--mode", "1", "--model",
            str(files["model"]), "--also-texture", "--detector", "opencv"]
    assert texture.main(argv) == 0, capsys.readouterr().err
    assert patched[-1]["detector"] == "opencv"
    want = swap_faces(str(files["a"]), str(files["b"]), edit_predictor)
    np.testing.assert_array_equal(cv2.imread(str(out))[..., ::-1], want.image)  # PNG: lossless
    printed = capsys.readouterr().out
    assert f"wrote {out} (a.png: face 0 <- face 0 of b.png; region face; colour transfer on; blend poisson)" in printed
    for name, shape in (("swap_texture.png", (512, 512, 3)), ("swap_ref_texture.png", (512, 512, 3)),
                        ("swap_uv_mask.png", (512, 512, 3)), ("swap_mask.png", (200, 200, 3))):
        img = cv2.imread(str(out.with_name(name)))
        assert img is not None and img.shape == shape, name
    np.testing.assert_array_equal(cv2.imread(str(out.with_name("swap_mask.png")))[..., 0] > 0, want.mask)
    # --mode 0: the eyes; --region, --no-color-transfer, --blend, JPEG output
    eyes = tmp_path / "eyes.jpg"
    assert texture.main(["--image_path", str(files["a"]), "--ref_path", str(files["b"]), "--output_path", str(eyes),
                         "--mode", "0", "--model", str(files["model"]), "--no-color-transfer", "--blend", "alpha",
                         "--detector", "opencv"]) == 0
    img = cv2.imread(str(eyes))
    assert img.shape == (200, 200, 3)
    assert "region eyes; colour transfer off; blend alpha" in capsys.readouterr().out


def test_faces_masks_and_errors_through_the_cli(files, tmp_path, patched, capsys):
    model = str(files["model"])
    out = tmp_path / "o.png"
    fast = ["--detector", "opencv"]  # only checked for availability: the patched predictor has its own
    # two faces of one image trade places when there is no -r
    assert texture.main(["-i", str(files["g"]), "-o", str(out), "--model", model, *fast]) == 0
    assert "g.png: face 1 <- face 0 of g.png, face 0 <- face 1 of g.png" in capsys.readouterr().out
    assert texture.main(["-i", str(files["g"]), "-r", str(files["p"]), "-o", str(out), "--model", model,
                         "--face", "all", "--also-texture", *fast]) == 0
    assert (tmp_path / "o_face0_texture.png").is_file() and (tmp_path / "o_face1_ref_texture.png").is_file()
    capsys.readouterr()
    mask = tmp_path / "mask.png"
    cv2.imwrite(str(mask), np.full((256, 256), 255, np.uint8)[:, :200])
    errors = [
        (["-i", str(files["g"]), "-r", str(files["p"]), "--face", "5"], f"{files['g']}: face index 5 out of range: 2"),
        (["-i", str(files["p"]), "-r", str(files["g"]), "--ref-face", "2"], f"{files['g']}: face index 2 out of range"),
        (["-i", str(files["blank"]), "-r", str(files["p"])], f"{files['blank']}: no face found"),
        (["-i", str(files["p"]), "-r", str(files["blank"])], f"{files['blank']}: no face found"),
        (["-i", str(files["p"])], "needs two faces, found 1"),
        (["-i", str(files["p"]), "-r", str(files["q"]), "--region", str(mask)],
         f"{mask}: expected a 256x256 mask (the UV map's resolution), got 200x256"),
    ]
    for argv, message in errors:
        assert texture.main(argv + ["-o", str(out), "--model", model, *fast]) == 2, argv
        assert message in _one_error_line(capsys), argv


def test_config_file_gives_the_options(files, tmp_path, patched, capsys):
    """--config: inference values, crop rules and data.max_image_pixels as prnet-predict resolves them."""
    import json

    from prnet_keras.geometry import CropConfig

    crop = {**CropConfig().to_dict(), "detector_box_scale": 1.9}
    path = tmp_path / "texture.json"
    path.write_text(json.dumps({"inference": {"detector": "opencv", "min_confidence": 0.7, "min_face_size": 50,
                                              "engine": "keras"}, "crop": crop}))
    out = tmp_path / "o.png"
    argv = ["-i", str(files["a"]), "-r", str(files["b"]), "-o", str(out), "--model", str(files["model"])]
    assert texture.main(argv + ["--config", str(path)]) == 0, capsys.readouterr().err
    kw = patched[-1]
    assert (kw["detector"], kw["min_confidence"], kw["min_face_size"], kw["engine"]) == ("opencv", 0.7, 50, "keras")
    assert kw["crop_config"] == CropConfig.from_dict(crop)
    assert texture.main(argv + ["--config", str(path), "--min-face-size", "60"]) == 0  # a flag wins over the file
    assert patched[-1]["min_face_size"] == 60
    path.write_text(json.dumps({"data": {"max_image_pixels": 200 * 200 - 1}}))  # the scenes are 200x200
    assert texture.main(argv + ["--config", str(path), "--detector", "opencv"]) == 2
    assert "more than the limit" in _one_error_line(capsys)


def test_interrupt_is_one_line(files, tmp_path, monkeypatch, capsys):
    import prnet_keras.cli.load_model as lm

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lm, "load_predictor", interrupted)
    out = tmp_path / "out.jpg"
    assert texture.main(["-i", str(files["a"]), "-r", str(files["b"]), "-o", str(out), "--model",
                         str(files["model"]), "--detector", "opencv"]) == 130
    assert capsys.readouterr().err == f"interrupted: nothing was written to {out}\n" and not out.exists()


@pytest.mark.reference
def test_real_photos(reference_data, official_layout, edit_helpers, tmp_path, monkeypatch, capsys):
    """Two real photos, MTCNN, the official layout; a frontal mean face stands in for the
    network (the official weights are not available): runs and writes an image of A's size."""
    import prnet_keras.cli.load_model as lm
    from prnet_keras.inference import Predictor

    predictor = Predictor(edit_helpers.frontal_network(official_layout), official_layout)
    monkeypatch.setattr(lm, "load_predictor", lambda *a, **kw: predictor)
    (tmp_path / "m.keras").write_bytes(b"never read")
    photo_a, photo_b = reference_data / "photos" / "1.jpg", reference_data / "photos" / "4.jpg"
    for mode in ("1", "0"):
        out = tmp_path / f"out{mode}.jpg"
        rc = texture.main(["-i", str(photo_a), "-r", str(photo_b), "-o", str(out), "--mode", mode,
                           "--model", str(tmp_path / "m.keras")])
        assert rc == 0, capsys.readouterr().err
        got, before = cv2.imread(str(out)), cv2.imread(str(photo_a))
        assert got.shape == before.shape
        changed = np.abs(got.astype(int) - before.astype(int)).max(-1) > 12  # beyond JPEG noise
        assert changed.sum() > (2000 if mode == "1" else 30), mode
