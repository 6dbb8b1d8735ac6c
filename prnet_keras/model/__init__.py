"""prnet_keras.model."""
