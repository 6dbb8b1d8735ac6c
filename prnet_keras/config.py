"""The one configuration system: plain JSON data, defaults plus named overrides.

The packaged ``prnet_keras/configs/defaults.json`` holds every stage's defaults. A named
configuration or any JSON file overrides any subset, and CLI flags override both.
``--config`` takes a path (anything with a suffix or a folder part), else a name looked up
as ``./configure/NAME.json`` (your own configurations, beside where you run) and then among
the packaged ones (``prnet_keras/configs/NAME.json``, e.g. ``quickstart``). Configurations
are plain nested dicts so they serialise into run folders and HDF5 attributes unchanged.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from prnet_keras.errors import InputError

PACKAGED_DIR = Path(__file__).resolve().parent / "configs"
USER_DIR = Path("configure")  # relative: looked up in the working folder


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: configuration file not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object at the top level")
    return data


def packaged_names() -> list[str]:
    """Names of the configurations shipped with the package (``defaults``, ``quickstart``, ...)."""
    return sorted(p.stem for p in PACKAGED_DIR.glob("*.json"))


def config_path(name_or_path: str | os.PathLike) -> Path:
    """The file ``--config NAME|PATH`` refers to.

    A value with a suffix or a folder part is a path. A bare name is looked up as
    ``./configure/NAME.json`` first, then as the packaged ``NAME.json``.
    """
    p = Path(name_or_path)
    if p.suffix or len(p.parts) != 1:
        return p
    for candidate in (USER_DIR / f"{p}.json", PACKAGED_DIR / f"{p}.json"):
        if candidate.is_file():
            return candidate
    raise InputError(f"--config {name_or_path}: no configuration of that name (looked for "
                     f"{USER_DIR / (str(p) + '.json')} and the packaged ones: {', '.join(packaged_names())}); "
                     f"a JSON file needs its .json suffix")


def load_config(name_or_path: str | os.PathLike | None = None, overrides: dict | None = None) -> dict[str, Any]:
    """Packaged defaults, then the named configuration or JSON file (see :func:`config_path`), then
    ``overrides``.

    >>> load_config("quickstart")["train"]["model"]
    'light'
    """
    config = _read(PACKAGED_DIR / "defaults.json")
    config.pop("_doc", None)
    if name_or_path:
        extra = _read(config_path(name_or_path))
        extra.pop("_doc", None)
        config = _merge(config, extra)
    if overrides:
        config = _merge(config, overrides)
    return config


def section(name: str, config: dict | None = None) -> dict[str, Any]:
    """One section of the (default) configuration, e.g. ``section("augment")``."""
    cfg = config if config is not None else load_config()
    if name not in cfg:
        raise InputError(f"configuration has no section {name!r}")
    return copy.deepcopy(cfg[name])
