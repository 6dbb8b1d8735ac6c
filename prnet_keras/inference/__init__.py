"""prnet_keras.inference."""
