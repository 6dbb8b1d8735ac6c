"""Training: augmentation, batch making and loading, the training loop, data parallelism.

- :mod:`.augment` — batch augmentation on the CPU (one affine per sample; labels follow the image).
- :mod:`.device_augment` — the same augmentation in ``keras.ops``, inside the train step.
- :mod:`.batches` — which samples form a batch (shards per replica/process), making one.
- :mod:`.loader` — batches made ahead on worker threads or processes (shared buffers).
- :mod:`.dataset` — :class:`AugmentedDataset` (``keras.utils.PyDataset``) and the training stream.
- :mod:`.trainer` — ``train(config) -> run folder``.
- :mod:`.callbacks` — run-folder bookkeeping (checkpoints, state, log, curves).
- :mod:`.distribute` — tf.distribute / keras.distribution seam, cluster discovery.

Names are imported on first use: the batch worker processes import this package and
must not pull in Keras.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"AugmentConfig": "augment", "augment_batch": "augment", "ArraySource": "batches",
         "AugmentedDataset": "dataset"}


def train(config: dict[str, Any]):
    """See :func:`prnet_keras.train.trainer.train`."""
    from prnet_keras.train.trainer import train as _train

    return _train(config)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"prnet_keras.train.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'prnet_keras.train' has no attribute {name!r}")


__all__ = ["ArraySource", "AugmentConfig", "AugmentedDataset", "augment_batch", "train"]
