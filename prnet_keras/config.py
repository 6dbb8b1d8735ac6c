"""The one configuration system: plain JSON data, defaults plus named overrides.

The packaged ``prnet_keras/configs/defaults.json`` holds every stage's defaults. A named
configuration or any JSON file overrides any subset, and CLI flags override both.
``--config`` takes a path (anything with a suffix or a folder part), else a name looked up
as ``./configure/NAME.json`` (your own configurations, beside where you run) and then among
the packaged ones (``prnet_keras/configs/NAME.json``, e.g. ``quickstart``). Configurations
are plain nested dicts so they serialise into run folders and HDF5 attributes unchanged.

Only entry points read it (the CLIs, ``prnet-serve``'s start-up, the quickstart): they
resolve it once and pass the values down. Library functions take values as arguments,
with defaults equal to the packaged ones (tests keep the two spellings equal). Unknown
sections or keys are an error naming the file: a misspelt option must not be ignored.
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


def check_known(config: dict, reference: dict, origin: str) -> None:
    """Raise InputError naming ``origin`` and the key when ``config`` has a section or key
    that ``reference`` (the packaged defaults) lacks."""
    for name, body in config.items():
        if name == "_doc":
            continue
        if name not in reference:
            raise InputError(f"{origin}: unknown section {name!r}; known: {', '.join(sorted(reference))}")
        if not isinstance(body, dict):
            raise InputError(f"{origin}: section {name!r} must be a JSON object")
        unknown = sorted(k for k in body if k != "_doc" and k not in reference[name])
        if unknown:
            raise InputError(f"{origin}: unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}; "
                             f"known in {name}: {', '.join(reference[name])}")


def load_config(name_or_path: str | os.PathLike | None = None, overrides: dict | None = None) -> dict[str, Any]:
    """Packaged defaults, then the named configuration or JSON file (see :func:`config_path`), then
    ``overrides``; unknown sections or keys raise InputError naming the file.

    >>> load_config("quickstart")["train"]["model"]
    'light'
    """
    config = _read(PACKAGED_DIR / "defaults.json")
    config.pop("_doc", None)
    if name_or_path:
        path = config_path(name_or_path)
        extra = _read(path)
        extra.pop("_doc", None)
        check_known(extra, config, str(path))
        config = _merge(config, extra)
    if overrides:
        check_known(overrides, config, "command-line options")
        config = _merge(config, overrides)
    return config
