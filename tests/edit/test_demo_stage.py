"""The quickstart's texture stage (cli.demo.stage_texture): two new synthetic faces, the whole
face and the eyes swapped with prnet-texture, and the before / after figure."""

from __future__ import annotations

import cv2

from prnet_keras.cli import demo


def test_stage_texture_writes_results_and_figure(tiny_model_path, tmp_path, monkeypatch, capsys):
    import prnet_keras.cli.load_model as lm

    # the model is loaded once for the two commands of the stage (test_cli loads it the way users do)
    loaded = {}
    real = lm.load_predictor
    monkeypatch.setattr(lm, "load_predictor",
                        lambda *a, **kw: loaded.get("p") or loaded.setdefault("p", real(*a, **kw)))
    figure = demo.stage_texture(tmp_path, tiny_model_path, seed=0)
    out = capsys.readouterr().out
    assert "$ prnet-texture -i" in out and "--mode 1" in out and "--mode 0" in out
    assert figure == tmp_path / "texture" / "before_after.png"
    for name in ("swap.jpg", "eyes.jpg"):
        img = cv2.imread(str(tmp_path / "texture" / name))
        assert img is not None and img.shape == (450, 450, 3), name
    fig = cv2.imread(str(figure))
    assert fig is not None and fig.shape[1] > 2.5 * fig.shape[0]
    # run again: the faces are reused, the results made anew
    demo.stage_texture(tmp_path, tiny_model_path, seed=0)
    assert len(list((tmp_path / "texture" / "faces").glob("*.jpg"))) == 4
