"""Small shared helpers: atomic file writes, JSON-safe conversion, progress bars, reference-data lookup."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np


def _read_umask() -> int:
    # os.umask can only be read by setting it; do it once at import, not per write, so no
    # other thread ever creates a file while the process umask is briefly 0.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
FILE_MODE = 0o666 & ~_UMASK  # what open() would give a new file: mkstemp's 0600 is changed to this


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def progress_bar(total: int, desc: str | None = None, unit: str = "it", enabled: bool = True, initial: int = 0) -> Any:
    """A tqdm progress bar on stderr; a silent one when ``enabled`` is False or stderr is not a
    terminal (logs and pipes get no bar). ``update(n)`` / ``close()`` / ``write(text)`` work either way."""
    from tqdm import tqdm

    try:
        terminal = sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stderr
        terminal = False
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                smoothing=0.1, disable=not (enabled and terminal))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    Readers never see a half-written file: the rename is atomic on POSIX file systems.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes 0600 files; give the result the usual permissions (0666 minus umask).
    os.chmod(tmp_path, FILE_MODE)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays (also nested in dicts/lists) to plain Python types."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def reference_data_dir() -> Path | None:
    """The optional folder of real reference samples, or None.

    ``PRNET_REFERENCE_DATA`` names it; otherwise a ``shared/reference-data`` folder beside or
    inside the checkout is used when present. The project never needs it to run;
    tests that use it skip when it is absent.
    """
    env = os.environ.get("PRNET_REFERENCE_DATA")
    candidates = [Path(env)] if env else []
    root = Path(__file__).resolve().parent.parent
    candidates += [root.parent / "shared" / "reference-data", root / "shared" / "reference-data"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def npy_header(fileobj: Any) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from an open ``.npy`` file's header, read before any data is allocated.

    Raises ValueError when it is not a ``.npy`` file (or an unsupported version)."""
    from numpy.lib import format as npy_format

    version = npy_format.read_magic(fileobj)
    read = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}.get(version)
    if read is None:
        raise ValueError(f"unsupported .npy version {version}")
    shape, _fortran, dtype = read(fileobj)
    return tuple(shape), dtype


def options_from_dict(cls: type, values: Mapping[str, Any] | None, section: str) -> Any:
    """``cls(**values)`` for a dataclass of options (one configuration section).

    Keys missing from ``values`` keep the dataclass defaults (the packaged defaults); an
    unknown key raises :class:`InputError` naming ``section.key`` (a misspelt option must
    not pass silently); JSON lists become tuples where the field's default is a tuple.
    """
    import dataclasses

    from prnet_keras.errors import InputError

    values = dict(values or {})
    values.pop("_doc", None)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(f"{section}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    for name, value in values.items():
        if isinstance(value, list) and isinstance(fields[name].default, tuple):
            values[name] = tuple(value)
    return cls(**values)
