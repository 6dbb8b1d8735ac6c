"""AugmentedDataset: batch format, seeded per-epoch shuffling, modes, workers."""

from __future__ import annotations

import numpy as np
import pytest

from prnet_keras import LABEL_SCALE
from prnet_keras.errors import InputError
from prnet_keras.train.dataset import ArraySource, AugmentedDataset, yaw_balanced_weights


@pytest.fixture
def source(toy_data, layout):
    return ArraySource(*toy_data, layout=layout)


def test_train_batches_format(source):
    ds = AugmentedDataset(source, batch_size=4, seed=0)
    assert len(ds) == 3 and ds.num_batches == 3
    x, y = ds[0]
    assert x.shape == y.shape == (4, 256, 256, 3)
    assert x.dtype == y.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert ds.layout is source.layout


def test_val_mode_is_plain_and_ordered(source, toy_data):
    images, maps = toy_data
    ds = AugmentedDataset(source, batch_size=5, mode="val")
    assert len(ds) == 3  # 12 samples: the partial last batch is kept for validation
    x, y = ds[2]
    assert x.shape[0] == 2
    np.testing.assert_allclose(x, images[10:] / 255.0, atol=1e-6)
    np.testing.assert_allclose(y * LABEL_SCALE, maps[10:], rtol=1e-6)
    ds.on_epoch_end()
    np.testing.assert_array_equal(ds[0][0], AugmentedDataset(source, batch_size=5, mode="val")[0][0])


def test_train_drops_partial_batch_and_covers_each_sample_once(source):
    ds = AugmentedDataset(source, batch_size=5, seed=1)
    assert len(ds) == 2
    idx = np.concatenate([ds.batch_indices(i) for i in range(len(ds))])
    assert len(set(idx.tolist())) == 10


def test_determinism_from_seed_and_per_epoch_reshuffle(source):
    a = AugmentedDataset(source, batch_size=4, seed=5)
    b = AugmentedDataset(source, batch_size=4, seed=5)
    c = AugmentedDataset(source, batch_size=4, seed=6)
    for i in range(len(a)):
        np.testing.assert_array_equal(a[i][0], b[i][0])
        np.testing.assert_array_equal(a[i][1], b[i][1])
    assert not np.array_equal(a.order(), c.order())
    first = a.order().copy()
    batch0 = a[0][0]
    a.on_epoch_end()
    assert a.epoch == 1
    assert not np.array_equal(a.order(), first), "a new epoch must reshuffle"
    assert sorted(a.order()) == sorted(first)
    assert not np.array_equal(a[0][0], batch0)
    # A dataset started at epoch 1 (a resumed run) sees exactly what the running one sees.
    r = AugmentedDataset(source, batch_size=4, seed=5, epoch=1)
    np.testing.assert_array_equal(r[1][1], a[1][1])


def test_max_batches_and_sample_weights(source):
    w = np.arange(12, dtype=np.float32)
    ds = AugmentedDataset(source, batch_size=4, max_batches=2, sample_weight=w)
    assert len(ds) == 2
    x, y, sw = ds[1]
    np.testing.assert_array_equal(sw, w[ds.batch_indices(1)])
    with pytest.raises(InputError, match="sample_weight"):
        AugmentedDataset(source, batch_size=4, sample_weight=w[:3])


def test_yaw_balanced_weights():
    w = yaw_balanced_weights(np.array([0, 10, 20, -25, 45, 80]))
    assert w.mean() == pytest.approx(1.0)
    assert w[0] == w[1] == w[3] and w[4] == w[5] and w[4] > w[0]


@pytest.mark.parametrize("kwargs, match", [({"mode": "test"}, "mode"), ({"batch_size": 0}, "batch size"),
                                           ({"batch_size": 64}, "fewer than one batch")])
def test_bad_arguments(source, kwargs, match):
    with pytest.raises(InputError, match=match):
        AugmentedDataset(source, **kwargs)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        AugmentedDataset(tmp_path / "nope.hdf5")


def test_multiprocessing_workers_give_the_same_batches(source):
    """Keras' OrderedEnqueuer with forked workers yields exactly the single-process batches."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    ds = AugmentedDataset(source, batch_size=4, seed=2, workers=2, use_multiprocessing=True)
    ref = AugmentedDataset(source, batch_size=4, seed=2)
    adapter = PyDatasetAdapter(ds)
    for _ in range(2):
        adapter.on_epoch_begin()
        got = [b for b in adapter.get_numpy_iterator()]
        adapter.on_epoch_end()
        assert len(got) == 3
        for i, (x, y) in enumerate(got):
            np.testing.assert_array_equal(x, ref[i][0])
            np.testing.assert_array_equal(y, ref[i][1])
        ref.on_epoch_end()
    assert ds.epoch == 2


def test_reads_files_built_by_the_data_package(synthetic_train_hdf5, synthetic_val_hdf5):
    from prnet_keras.data.hdf5 import PositionMapDataset

    ref = PositionMapDataset([synthetic_train_hdf5])
    ds = AugmentedDataset([synthetic_train_hdf5], batch_size=4, seed=0)
    assert ds.layout == ref.layout and ds.n_samples == len(ref)
    x, y = ds[0]
    assert x.shape == y.shape == (4, 256, 256, 3) and 0 <= x.min() and x.max() <= 1
    # Labels are crop px / 281.6: face pixels mostly inside the (augmented) crop.
    face = y[:, ref.layout.face_mask]
    assert 20 < np.median(face[..., :2]) * LABEL_SCALE < 236
    val = AugmentedDataset([synthetic_val_hdf5], batch_size=5, mode="val")
    xv, yv = val[0]
    raw = PositionMapDataset([synthetic_val_hdf5]).read_batch(range(5))
    np.testing.assert_allclose(yv * LABEL_SCALE, raw["position_map"], rtol=1e-5, atol=1e-3)


def test_on_device_batches_carry_decoded_crops_maps_and_draws(toy_hdf5_dir):
    """The CPU half of on-accelerator augmentation: plain crops, the stored float16 maps as byte
    planes (gzip files), and the per-sample draws the CPU path would have applied."""
    import keras

    from prnet_keras.data.hdf5 import PositionMapDataset
    from prnet_keras.train.augment import apply_params, sample_params_per_sample
    from prnet_keras.train.device_augment import position_maps

    files = [toy_hdf5_dir / "train.hdf5"]
    dev = AugmentedDataset(files, batch_size=4, seed=7, on_device=True)
    cpu = AugmentedDataset(files, batch_size=4, seed=7)
    (x,) = dev[1]
    idx = dev.batch_indices(1)
    raw = PositionMapDataset(files).read_batch(idx, meta=False)
    assert x["image"].dtype == np.uint8 and x["position_map"].shape == (4, 2, 256, 256, 3)
    np.testing.assert_array_equal(x["image"], raw["image"])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(position_maps(x["position_map"])), raw["position_map"])
    params = sample_params_per_sample(cpu.augment, cpu.maker.sample_rngs(0, idx))
    np.testing.assert_allclose(x["matrix"], params.matrices.reshape(-1, 6), rtol=1e-6)
    ref = apply_params(raw["image"], raw["position_map"], params, 1 / LABEL_SCALE)
    got = cpu[1]
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
