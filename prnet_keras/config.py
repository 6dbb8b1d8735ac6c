"""The one configuration system: plain JSON data, defaults plus named overrides.

``configure/defaults.json`` holds every stage's defaults; a named configuration
(``configure/NAME.json``) or any JSON file overrides any subset, and CLI flags override
both. Configurations are plain nested dicts so they serialise into run folders and HDF5
attributes unchanged.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from prnet_keras.errors import InputError

CONFIGURE_DIR = Path(__file__).resolve().parent.parent / "configure"


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


def load_config(name_or_path: str | None = None, overrides: dict | None = None) -> dict[str, Any]:
    """Defaults, then ``configure/<name>.json`` (or a path), then ``overrides``."""
    config = _read(CONFIGURE_DIR / "defaults.json")
    config.pop("_doc", None)
    if name_or_path:
        p = Path(name_or_path)
        if not p.suffix:
            p = CONFIGURE_DIR / f"{name_or_path}.json"
        extra = _read(p)
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
