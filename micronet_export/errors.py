"""One exception family for everything a user can get wrong.

The CLI catches :class:`UserError` and prints ``error: <message>`` on one line with a non-zero
exit; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix (bad variant, bad file, bad option). ``str()`` is one line."""

    exit_code = 2


class CheckpointError(UserError):
    """A checkpoint file that cannot be read or does not fit the network."""


class CalibrationError(UserError):
    """A calibration / evaluation image folder that cannot be used."""


class ParityError(UserError):
    """An exported artifact disagrees with its reference beyond the thresholds.

    Raised after the artifacts and the report were written; ``report`` holds the numbers.
    """

    exit_code = 1

    def __init__(self, message: str, report=None) -> None:
        super().__init__(message)
        self.report = report


class OutputExistsError(UserError):
    """An artifact would be overwritten without --force."""
