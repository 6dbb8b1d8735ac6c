"""load_model CLI: folder walk, broken files reported and skipped, clear one-line errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from prnet_keras.cli.load_model import main, parse_bbox, parse_outputs, process_images
from prnet_keras.errors import InputError
from prnet_keras.inference import Predictor
from prnet_keras.inference.images import list_images


@pytest.fixture
def photo_dir(tmp_path, reference_data):
    src = reference_data / "aflw2000-3d"
    (tmp_path / "in" / "sub").mkdir(parents=True)
    shutil.copy(src / "image00050.jpg", tmp_path / "in" / "a.jpg")
    shutil.copy(src / "image00081.jpg", tmp_path / "in" / "sub" / "B.JPEG")
    data = (src / "image00430.jpg").read_bytes()
    (tmp_path / "in" / "broken.jpg").write_bytes(data[:200])  # truncated JPEG
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    return tmp_path / "in"


def test_list_images_recursive_any_case(photo_dir):
    paths = list_images(photo_dir)
    assert [p.relative_to(photo_dir).as_posix() for p in paths] == ["a.jpg", "broken.jpg", "sub/B.JPEG"]


def test_folder_with_broken_file_continues(photo_dir, tmp_path, posed_samples, bfm_layout):
    gt = posed_samples[0].gt_map
    calls = []

    def net(x):
        calls.append(len(x))
        return np.repeat(gt[None], len(x), axis=0)

    def detector(image):  # one fixed box per image
        from prnet_keras.inference.detect import Detection

        return [Detection(np.array([150.0, 150.0, 300.0, 300.0]), 0.99, "box")]

    logs = []
    summary = process_images(list_images(photo_dir), Predictor(net, bfm_layout), tmp_path / "out",
                             ["obj", "kpt", "pose"],
                             root=photo_dir, detector=detector, batch=8, log=logs.append)
    assert summary["images"] == 2 and summary["faces"] == 2
    assert calls == [2]  # both images' faces in one network batch
    assert len(summary["skipped"]) == 1 and "broken.jpg" in summary["skipped"][0][0]
    assert any("broken.jpg" in m and "cannot decode" in m for m in logs)
    assert (tmp_path / "out" / "a_0.obj").is_file()
    assert (tmp_path / "out" / "sub" / "B_0_pose.json").is_file()  # input folder structure mirrored


def test_no_face_is_reported(photo_dir, tmp_path, bfm_layout):
    logs = []
    summary = process_images([photo_dir / "a.jpg"], Predictor(lambda x: x, bfm_layout), tmp_path, ["obj"],
                             detector=lambda im: [], log=logs.append)
    assert summary["faces"] == 0 and logs == [f"skip: {photo_dir / 'a.jpg'}: no face found"]


def test_parsers():
    assert parse_outputs("obj, PLY,obj") == ["obj", "ply"]
    with pytest.raises(InputError, match="stl"):
        parse_outputs("obj,stl")
    assert parse_bbox("1,2,30,40") == [1.0, 2.0, 30.0, 40.0]
    for bad in ("1,2,3", "5,5,1,1", "a,b,c,d"):
        with pytest.raises(InputError, match="--bbox"):
            parse_bbox(bad)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


def test_cli_missing_model(photo_dir, tmp_path, capsys):
    assert main(["--image", str(photo_dir / "a.jpg"), "--model", str(tmp_path / "nope.keras"), "--output",
                 str(tmp_path)]) == 2
    assert "nope.keras: file not found" in _one_error_line(capsys)


def test_cli_unreadable_image(photo_dir, tmp_path, capsys):
    assert main(["--image", str(photo_dir / "broken.jpg"), "--model", "x.keras", "--output", str(tmp_path)]) == 2
    assert "broken.jpg: cannot decode image" in _one_error_line(capsys)


def test_cli_missing_image_and_bad_outputs(tmp_path, capsys):
    assert main(["--image", str(tmp_path / "none.png"), "--model", "x.keras"]) == 2
    assert "image file not found" in _one_error_line(capsys)
    assert main(["--input-dir", str(tmp_path), "--model", "x.keras", "--outputs", "obj,gif"]) == 2
    assert "gif" in _one_error_line(capsys)


def test_cli_dlib_not_installed(photo_dir, tmp_path, capsys):
    try:
        import dlib  # noqa: F401
        pytest.skip("dlib is installed")
    except ImportError:
        pass
    model = tmp_path / "m.keras"
    model.write_bytes(b"x")
    assert main(["--image", str(photo_dir / "a.jpg"), "--model", str(model), "--detector", "dlib"]) == 2
    assert "dlib package is not installed" in _one_error_line(capsys)


def test_cli_wrong_kind_of_model_file(photo_dir, tmp_path, capsys):
    model = tmp_path / "m.keras"
    model.write_bytes(b"this is not a keras archive")
    assert main(["--image", str(photo_dir / "a.jpg"), "--model", str(model), "--detector", "none",
                 "--output", str(tmp_path / "o")]) == 2
    _one_error_line(capsys)


def test_cli_end_to_end_with_keras_file(photo_dir, tmp_path, official_layout, capsys):
    pytest.importorskip("prnet_keras.model.io", reason="model.io (load_network) not available yet")
    from prnet_keras.model import build_model

    model_path = tmp_path / "m.keras"
    build_model("light", width=0.25).save(model_path)
    official_layout.save(tmp_path / "uv_layout.npz")
    out = tmp_path / "out"
    rc = main(["--image", str(photo_dir / "a.jpg"), "--model", str(model_path), "--uv-data",
               str(tmp_path / "uv_layout.npz"),
               "--bbox", "150,150,300,300", "--outputs", "obj,mat,kpt,pose", "--output", str(out), "--cpu"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a_0.mat", "a_0.obj", "a_0_kpt.npy", "a_0_kpt.txt",
                                                     "a_0_pose.json"]
    assert "1 image(s), 1 face(s), 5 file(s)" in capsys.readouterr().out


def test_show_without_display_writes_headless_views(photo_dir, tmp_path, posed_samples, bfm_layout, monkeypatch,
                                                    capsys):
    from prnet_keras.cli.load_model import _show

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    s = posed_samples[0]
    summary = process_images([photo_dir / "a.jpg"], Predictor(lambda x: s.gt_map[None], bfm_layout), tmp_path, ["kpt"],
                             detector=lambda im: [], bbox=[150, 150, 300, 300], keep_faces=True)
    _show(summary["face_objects"])
    views = tmp_path / "a_0_views.png"
    assert views.is_file() and "headless mesh views" in capsys.readouterr().err
    img = __import__("cv2").imread(str(views))
    assert img.shape == (256, 768, 3) and (img.max(2) > 0).mean() > 0.1


def test_cli_flag_errors_are_one_line(capsys):
    assert main(["--model", "m.keras"]) == 2  # neither --image nor --input-dir
    assert "one of the arguments --image --input-dir --video --webcam is required" in _one_error_line(capsys)
    assert main(["--image", "a.jpg", "--model", "m.keras", "--detector", "yolo"]) == 2
    assert "invalid choice: 'yolo'" in _one_error_line(capsys)
    assert main(["--help"]) == 0


def test_cli_interrupt_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    import cv2

    image = tmp_path / "face.jpg"
    cv2.imwrite(str(image), np.full((64, 64, 3), 128, np.uint8))
    (tmp_path / "m.keras").write_bytes(b"never read: loading is interrupted")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Predictor, "from_path", interrupted)
    out = tmp_path / "out"
    assert main(["--image", str(image), "--model", str(tmp_path / "m.keras"), "--detector", "none",
                 "--output", str(out)]) == 130
    err = capsys.readouterr().err
    assert err == f"interrupted: the files written so far stay in {out}\n"
