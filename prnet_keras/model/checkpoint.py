"""Import the official PRNet TF1 checkpoint (``256_256_resfcn256_weight``) into ResFCN256.

TensorFlow-only seam: the checkpoint is read with ``tf.train.load_checkpoint`` (names,
shapes and values from ``<prefix>.index`` + ``<prefix>.data-*``). Every official model
variable (245 of them, 13,365,508 values; Adam slots and beta powers are ignored) must map
to exactly one Keras weight of the same shape, and every Keras weight must be covered.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from prnet_keras.errors import ModelFileError
from prnet_keras.model.resfcn import OFFICIAL_SCOPE, official_variable_map

OFFICIAL_PREFIX_NAME = "256_256_resfcn256_weight"


def checkpoint_prefix(path: str | Path) -> Path:
    """Normalise a checkpoint path: accept the prefix, ``prefix.index`` or ``prefix.data-*``."""
    p = Path(path)
    name = p.name
    if name.endswith(".index"):
        p = p.with_name(name[: -len(".index")])
    elif ".data-" in name:
        p = p.with_name(name.split(".data-")[0])
    return p


def is_tf1_checkpoint(path: str | Path) -> bool:
    """True when ``<prefix>.index`` exists for this path."""
    p = checkpoint_prefix(path)
    return p.with_name(p.name + ".index").is_file()


def list_official_variables(prefix: str | Path) -> dict[str, tuple[int, ...]]:
    """Model variables of a TF1 checkpoint: name -> shape (optimizer slots excluded).

    Reads the ``.index`` alone. Raises ModelFileError when it is missing or unreadable.
    """
    import tensorflow as tf

    prefix = checkpoint_prefix(prefix)
    if not is_tf1_checkpoint(prefix):
        raise ModelFileError(f"{prefix}: no TF1 checkpoint here "
                             f"(expected {prefix.name}.index and {prefix.name}.data-*)")
    try:
        entries = tf.train.list_variables(str(prefix))
    except (tf.errors.OpError, ValueError) as exc:
        raise ModelFileError(f"{prefix}.index: not a readable TF checkpoint index ({exc.__class__.__name__})") from None
    return {
        name: tuple(shape) for name, shape in entries
        if name.startswith(OFFICIAL_SCOPE + "/") and "/Adam" not in name
    }


def match_official_variables(model: keras.Model, official: dict[str, tuple[int, ...]]) -> dict[str, keras.Variable]:
    """Check a one-to-one, same-shape mapping between ``official`` and the model's weights.

    Returns official name -> Keras variable. Raises ModelFileError listing (up to 5 of each)
    missing, unexpected and shape-mismatched names.
    """
    try:
        mapping = official_variable_map(model)
    except ValueError as exc:
        raise ModelFileError(f"official checkpoint: {exc}") from None
    missing = sorted(set(mapping) - set(official))
    extra = sorted(set(official) - set(mapping))
    bad = sorted(
        f"{n} {tuple(official[n])} vs {tuple(mapping[n].shape)}"
        for n in set(mapping) & set(official) if tuple(official[n]) != tuple(mapping[n].shape)
    )
    if missing or extra or bad:
        parts = []
        for label, items in (("missing from checkpoint", missing), ("not in model", extra), ("shape mismatch", bad)):
            if items:
                parts.append(f"{len(items)} {label} (e.g. {', '.join(items[:5])})")
        raise ModelFileError(f"official checkpoint does not match model {model.name!r}: " + "; ".join(parts))
    return mapping


def load_official_checkpoint(model: keras.Model, prefix: str | Path) -> dict[str, tuple[int, ...]]:
    """Assign every weight of a default ``resfcn256`` model from an official TF1 checkpoint.

    ``prefix``: path without extension (``.index`` and ``.data-00000-of-00001`` beside it),
    or either file. Returns the official name -> shape table that was loaded. Nothing is
    assigned unless all names and shapes match (ModelFileError otherwise).
    """
    import tensorflow as tf

    prefix = checkpoint_prefix(prefix)
    official = list_official_variables(prefix)
    mapping = match_official_variables(model, official)
    if not list(prefix.parent.glob(prefix.name + ".data-*")):
        raise ModelFileError(f"{prefix}: the .index is here but no {prefix.name}.data-* file (the weights)")
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        values = {name: reader.get_tensor(name) for name in mapping}
    except (tf.errors.OpError, ValueError) as exc:
        raise ModelFileError(f"{prefix}: cannot read checkpoint values ({exc.__class__.__name__}: {exc})") from None
    for name, var in mapping.items():
        var.assign(np.asarray(values[name], dtype=var.dtype))
    return official
