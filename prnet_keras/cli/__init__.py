"""Thin command-line front ends: argparse, then one call into the library."""

from __future__ import annotations

import os
import sys
from typing import Callable

from prnet_keras.errors import PRNetError


def run_cli(body: Callable[[], int], interrupted: str) -> int:
    """Run a CLI body; a user error becomes one ``error: ...`` line (exit 2), Ctrl-C exits 130.

    ``interrupted`` tells the user what survived the interruption and how to continue.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow start-up chatter is not for users
    try:
        return body()
    except PRNetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
