"""prnet_keras.evaluate."""
