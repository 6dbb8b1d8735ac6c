"""prnet_keras.data: training data for PRNet.

Modules: ``sources`` (300W-LP / AFLW2000-3D readers, folder or zip), ``gt`` (ground-truth
position maps), ``hdf5`` (file format and :class:`~prnet_keras.data.hdf5.PositionMapDataset`),
``writer`` (HDF5 writing), ``build`` / ``worker`` (parallel, resumable, shardable builds),
``synth`` (synthetic datasets in the real layouts).
"""
