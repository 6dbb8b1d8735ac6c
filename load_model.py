"""``python load_model.py ...``: the same command as ``prnet-predict``."""

from prnet_keras.cli.load_model import main

if __name__ == "__main__":  # spawn workers re-import this file; they must not re-run the command
    raise SystemExit(main())
