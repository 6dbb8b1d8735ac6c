"""User-facing errors: CLIs print them as one line and exit non-zero, never a traceback."""

from __future__ import annotations


class PRNetError(Exception):
    """Base class of errors caused by user input (bad file, bad flag, missing data)."""


class InputError(PRNetError, ValueError):
    """A file or field does not hold what was expected.

    The message names the file and/or field and says what was expected.
    """


class LimitError(InputError):
    """A size an input declares (pixels, array bytes, member size, count) exceeds a limit.

    Raised *before* the memory is allocated; the server answers it with 413.
    """


class ModelFileError(PRNetError):
    """A model file is missing or of the wrong kind."""


class PRNetWarning(UserWarning):
    """Something the user should know that does not stop the work (CLIs print it as one
    ``warning: ...`` line)."""


class ClusterError(PRNetError):
    """Another process of a multi-process training run failed or cannot be reached."""
