"""Run in a subprocess by test_backends.py with KERAS_BACKEND set: build both networks (tiny),
set deterministic weights, record a forward pass (and one of the BN-folded copy, also through the
inference engine "auto" picks on this backend), then run one compiled train step with the
project's loss and metric. Writes the results to the .npz named on the command line."""

from __future__ import annotations

import sys

import numpy as np


def deterministic_weights(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for var in model.weights:
        shape, leaf = tuple(var.shape), var.path.rsplit("/", 1)[-1]
        if leaf in ("moving_variance", "gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf in ("moving_mean", "beta", "bias"):
            value = rng.normal(0, 0.1, shape)
        else:
            value = rng.normal(0, np.sqrt(2.0 / max(1, np.prod(shape[:-1]))), shape)
        var.assign(value.astype(np.float32))


def main(out: str) -> None:
    import keras

    from prnet_keras.model import LandmarkNME, build_model, get_loss
    from prnet_keras.model.engines import keras_forward
    from prnet_keras.model.fold import fold_batch_norm

    r = 64
    rng = np.random.default_rng(0)
    x = rng.random((2, r, r, 3), np.float32)
    y = rng.random((2, r, r, 3), np.float32)
    mask = np.zeros((r, r), np.float32)
    mask[8:56, 8:56] = 3 / 16
    kpt = np.stack([rng.integers(8, 56, 68), rng.integers(8, 56, 68)])
    mask[kpt[1], kpt[0]] = 1.0
    results = {"backend": np.array(keras.backend.backend())}
    for name, options in (("resfcn256", {"base_filters": 4}), ("light", {"width": 0.25})):
        model = build_model(name, resolution=r, **options)
        deterministic_weights(model, seed=1)
        results[f"{name}_forward"] = keras.ops.convert_to_numpy(model(x, training=False))
        folded = fold_batch_norm(model)
        results[f"{name}_folded"] = keras.ops.convert_to_numpy(folded(x, training=False))
        forward, engine = keras_forward(folded, "auto")
        results[f"{name}_engine"], results[f"{name}_engine_out"] = np.array(engine), forward(x)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=get_loss("weighted_mse", mask, resolution=r),
                      metrics=[LandmarkNME(kpt, resolution=r)])
        # Built now: the first step is then traced once, not twice (about half its start-up).
        model.optimizer.build(model.trainable_variables)
        before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
        logs = model.train_on_batch(x, y, return_dict=True)
        after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
        results[f"{name}_loss"] = np.float32(logs["loss"])
        results[f"{name}_nme"] = np.float32(logs["nme"])
        results[f"{name}_changed"] = np.float32(np.mean([not np.array_equal(a, b) for a, b in zip(before, after)]))
    np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv[1])
