"""prnet_keras.viz."""
