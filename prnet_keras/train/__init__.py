"""prnet_keras.train."""
