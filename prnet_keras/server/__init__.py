"""prnet_keras.server."""
