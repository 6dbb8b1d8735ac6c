"""Resolve a ``--bfm`` value to a morphable model: ``synthetic`` (``synthetic:bfm`` for the
BFM density), a face3d ``BFM.mat`` file, or a mean-only BFM folder.

Kept apart from :mod:`~prnet_keras.geometry.morphable` because it dispatches to
:mod:`~prnet_keras.geometry.synthetic`, which builds on ``morphable``.
"""

from __future__ import annotations

from pathlib import Path

from prnet_keras.errors import InputError
from prnet_keras.geometry.morphable import MorphableModel, load_face3d_bfm, load_mean_bfm


def load_morphable_model(spec: str | Path, seed: int = 0) -> MorphableModel:
    """Resolve a ``--bfm`` value: ``synthetic`` | a face3d ``.mat`` file | a mean-only folder."""
    if str(spec) == "synthetic" or str(spec).startswith("synthetic:"):
        from prnet_keras.geometry.synthetic import build_synthetic_model

        kw = {}
        if ":" in str(spec):  # synthetic:bfm -> BFM density (benchmarks)
            kw["density"] = str(spec).split(":", 1)[1]
        return build_synthetic_model(seed=seed, **kw)
    p = Path(spec)
    if p.is_dir():
        return load_mean_bfm(p)
    if p.suffix.lower() == ".mat":
        return load_face3d_bfm(p)
    raise InputError(f"--bfm {spec}: expected 'synthetic', a face3d BFM .mat file or a mean-only BFM folder")
