"""``python load_model_client.py ...``: the same command as ``prnet-client``."""

from prnet_keras.cli.client import main

if __name__ == "__main__":  # spawn workers re-import this file; they must not re-run the command
    raise SystemExit(main())
