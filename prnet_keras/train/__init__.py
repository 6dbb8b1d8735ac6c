"""Training: the augmenting PyDataset, the training loop with checkpoints/resume, data parallelism.

- :mod:`.augment` — batch augmentation (one affine per sample; labels follow the image).
- :mod:`.dataset` — :class:`AugmentedDataset` (``keras.utils.PyDataset`` over HDF5 files).
- :mod:`.trainer` — ``train(config) -> run folder``.
- :mod:`.callbacks` — run-folder bookkeeping (checkpoints, state, log, curves).
- :mod:`.distribute` — tf.distribute / keras.distribution seam.

``train`` is imported on first use (it pulls in the model package).
"""

from __future__ import annotations

from typing import Any

from prnet_keras.train.augment import AugmentConfig, augment_batch
from prnet_keras.train.dataset import ArraySource, AugmentedDataset


def train(config: dict[str, Any]):
    """See :func:`prnet_keras.train.trainer.train`."""
    from prnet_keras.train.trainer import train as _train

    return _train(config)


__all__ = ["ArraySource", "AugmentConfig", "AugmentedDataset", "augment_batch", "train"]
