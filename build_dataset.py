"""``python build_dataset.py ...``: the same command as ``prnet-build-dataset``."""

from prnet_keras.cli.build_dataset import main

if __name__ == "__main__":  # spawn workers re-import this file; they must not re-run the command
    raise SystemExit(main())
