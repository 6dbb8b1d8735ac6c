"""prnet_keras.data."""
