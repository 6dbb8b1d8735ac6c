"""Where ``--config NAME|PATH`` looks: a path as given; a name in ./configure/, then among the
configurations shipped inside the package (so an installed wheel finds its defaults)."""

from __future__ import annotations

import json

import pytest

from prnet_keras.config import PACKAGED_DIR, config_path, load_config, packaged_names
from prnet_keras.errors import InputError


def test_defaults_ship_inside_the_package():
    assert PACKAGED_DIR.parent.name == "prnet_keras"
    assert {"defaults", "quickstart"} <= set(packaged_names())
    cfg = load_config()
    assert {"crop", "data", "augment", "train", "evaluate", "inference", "server"} <= set(cfg)
    assert "_doc" not in cfg


def test_lookup_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_path("quickstart") == PACKAGED_DIR / "quickstart.json"
    assert load_config("quickstart")["train"]["model"] == "light"
    # the user's ./configure/NAME.json wins over a packaged one of the same name
    (tmp_path / "configure").mkdir()
    (tmp_path / "configure" / "quickstart.json").write_text(json.dumps({"train": {"epochs": 1}}))
    assert config_path("quickstart").resolve() == (tmp_path / "configure" / "quickstart.json").resolve()
    cfg = load_config("quickstart")
    assert cfg["train"]["epochs"] == 1 and cfg["train"]["model"] == load_config()["train"]["model"]
    # a path is a path: relative to the working folder, any name
    (tmp_path / "mine.json").write_text(json.dumps({"server": {"port": 1234}}))
    assert load_config("mine.json")["server"]["port"] == 1234
    assert load_config(tmp_path / "mine.json", {"server": {"port": 99}})["server"]["port"] == 99


def test_unknown_names_and_files_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"--config nosuch: no configuration of that name .*configure/nosuch\.json"
                                         r".*quickstart"):
        load_config("nosuch")
    with pytest.raises(InputError, match="configuration file not found"):
        load_config("missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        load_config("bad.json")
