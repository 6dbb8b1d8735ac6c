"""prnet_keras.cli."""
